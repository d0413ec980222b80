"""The straightforward baselines the perf issue measures against — as popular PyTorch ports write them.

VGG16-BN encoder with ``nn.MaxPool2d(return_indices=True)``, ``nn.MaxUnpool2d`` with int64 indices,
fp32, eager, NCHW, plain SGD. Deliberately NOT part of the library.
"""
from torch import nn

VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def cbr(i, o):
    return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]


class RefSegNet(nn.Module):
    def __init__(self, num_classes=11, fc=False):
        super().__init__()
        self.enc, c = nn.ModuleList(), 3
        for stage in VGG16:
            layers = []
            for o in stage:
                layers += cbr(c, o)
                c = o
            self.enc.append(nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.fc = nn.Sequential(nn.Conv2d(512, 4096, 7), nn.BatchNorm2d(4096), nn.ReLU(True),
                                nn.Conv2d(4096, 4096, 1), nn.BatchNorm2d(4096), nn.ReLU(True),
                                nn.ConvTranspose2d(4096, 512, 7), nn.BatchNorm2d(512), nn.ReLU(True)) if fc else None
        self.dec = nn.ModuleList()
        for i in reversed(range(5)):
            s, prev = VGG16[i], (VGG16[i - 1][-1] if i else 64)
            outs = [s[-1]] * (len(s) - 1) + [prev]
            if i == 0 and not fc:
                outs = outs[:-1]  # SegNet: the 3×3 classifier replaces the last decoder conv
            layers, c = [], s[-1]
            for o in outs:
                layers += cbr(c, o)
                c = o
            self.dec.append(nn.Sequential(*layers))
        self.cls = nn.Conv2d(64, num_classes, 1 if fc else 3, padding=0 if fc else 1)

    def forward(self, x):
        idx, sizes = [], []
        for stage in self.enc:
            x = stage(x)
            sizes.append(x.shape)
            x, i = self.pool(x)
            idx.append(i)
        if self.fc is not None:
            x = self.fc(x)
        for stage, i, s in zip(self.dec, reversed(idx), reversed(sizes)):
            x = stage(self.unpool(x, i, output_size=s))
        return self.cls(x)


def ref_model(name: str, num_classes: int) -> nn.Module:
    """``segnet`` (SegNet, 11 classes) or ``deconvnet`` (DeconvNet with fc6/fc7/fc6-deconv, 21 classes)."""
    return RefSegNet(num_classes, fc=(name == "deconvnet"))
