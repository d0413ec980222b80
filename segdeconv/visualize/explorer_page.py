"""The explorer's ``index.html``: inline CSS and JS, no external resource (it opens from ``file://``).

:func:`page` fills :data:`TEMPLATE` with the title and the JSON that
:func:`segdeconv.visualize.explorer.write_explorer` gathered; images are files beside the page.
Element ids (``class-table``, ``evidence-img``, ``occlusion-img``, ``view``, ``pixel-img``,
``pixel-info``, ``layer``, ``unit-img``) are what ``tests/test_explorer_browser.py`` drives.
"""
from __future__ import annotations

import html
import json
from typing import Any

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f4f5f7}
header{background:#1d2b3a;color:#fff;padding:10px 18px}header h1{font-size:18px;margin:0 0 4px}
header .facts{font-size:12px;color:#c5d0db}header .facts b{color:#fff;font-weight:600}
.bar{display:flex;gap:16px;align-items:center;flex-wrap:wrap;padding:10px 18px;background:#fff;border-bottom:1px solid #d8dde3}
.bar select,.bar input{font:inherit}main{display:flex;gap:16px;padding:14px 18px;align-items:flex-start}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;flex:1}
.panel{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:8px}
.panel h2{font-size:14px;margin:0 0 6px}.panel .cap{font-size:12px;color:#56606b;margin-top:4px;min-height:2.6em}
.panel img{width:100%;display:block;border-radius:3px;image-rendering:auto}
.stack{position:relative;cursor:crosshair}.stack img.ov{position:absolute;left:0;top:0}
.mark{position:absolute;width:12px;height:12px;margin:-7px 0 0 -7px;border:2px solid #fff;border-radius:50%;
box-shadow:0 0 0 2px #000;pointer-events:none;display:none}
.mark.cell{border-color:#ffd400;width:8px;height:8px;margin:-5px 0 0 -5px}
aside{width:290px;flex:none}aside table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
aside th,aside td{padding:4px 6px;border-bottom:1px solid #e6e9ed;text-align:right}aside th{background:#eef1f4}
aside td.n{text-align:left}aside tr.has{cursor:pointer}aside tr.has:hover{background:#eef5ff}
aside tr.sel{background:#dbe9ff;font-weight:600}aside tr.none{color:#98a1ab}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #0005;vertical-align:-2px;margin-right:6px}
.scale{height:10px;border-radius:2px;margin-top:4px}.lbl{display:flex;justify-content:space-between;gap:6px;font-size:11px;color:#56606b;white-space:nowrap}
.units{padding:0 18px 24px}.units .panel{max-width:none}.chips{display:flex;flex-wrap:wrap;gap:4px;margin:6px 0}
.chips button{font:inherit;font-size:12px;padding:2px 8px;border:1px solid #b8c2cc;background:#fff;border-radius:10px;cursor:pointer}
.chips button.sel{background:#1d2b3a;color:#fff}#unit-img{max-width:100%;width:auto;image-rendering:pixelated}
.note{font-size:12px;color:#56606b}
"""

BODY = """
<header><h1>__TITLE__</h1><div class="facts" id="facts"></div></header>
<div class="bar"><label>Image <select id="image"></select></label>
<label>Prediction overlay <input id="alpha" type="range" min="0" max="100" value="55"></label>
<span class="note" id="mc"></span></div>
<main><div class="panels">
<div class="panel"><h2>Image + prediction <span class="note">(click a pixel)</span></h2>
<div class="stack" id="view"><img id="base-img" alt="image"><img class="ov" id="pred-img" alt="prediction">
<div class="mark" id="mark"></div><div class="mark cell" id="cell-mark"></div></div>
<div class="cap">Colours: the predicted class (legend on the right). Click a pixel for its evidence.</div></div>
<div class="panel"><h2 id="evidence-title">Class evidence</h2><img id="evidence-img" alt="class evidence">
<div class="scale" style="background:linear-gradient(90deg,#fff,#f00)"></div>
<div class="lbl"><span>none</span><span>strong evidence</span></div>
<div class="cap" id="evidence-cap"></div></div>
<div class="panel"><h2 id="occlusion-title">Occlusion sensitivity</h2><img id="occlusion-img" alt="occlusion map">
<div class="scale" style="background:linear-gradient(90deg,#00f,#fff,#f00)"></div>
<div class="lbl"><span>occluding helps the class</span><span>0</span><span>occluding hurts it</span></div>
<div class="cap" id="occlusion-cap"></div></div>
<div class="panel"><h2 id="pixel-title">Pixel evidence</h2><img id="pixel-img" alt="pixel evidence">
<div class="scale" style="background:linear-gradient(90deg,#fff,#f00)"></div>
<div class="lbl"><span>none</span><span>strong evidence</span></div>
<div class="cap" id="pixel-info"></div></div>
<div class="panel"><h2 id="conf-title">Confidence</h2><img id="conf-img" alt="confidence">
<div class="scale" style="background:linear-gradient(90deg,#000,#fff)"></div>
<div class="lbl"><span id="conf-lo">low</span><span id="conf-hi">high</span></div>
<div class="cap" id="conf-cap"></div></div>
</div>
<aside><table id="class-table"><thead><tr><th class="n">class</th><th>pixels</th><th>confidence</th>
<th id="unc-head">uncertainty</th></tr></thead><tbody></tbody></table>
<p class="note">Choose a class (a row) to see its evidence and occlusion maps. Greyed classes are not
predicted in this image.</p><p class="note" id="method-note"></p></aside></main>
<section class="units"><div class="panel"><h2>Layer / unit browser (Zeiler &amp; Fergus Fig. 2)</h2>
<label>Layer <select id="layer"></select></label><div class="chips" id="channels"></div>
<img id="unit-img" alt="unit projections"><div class="cap" id="unit-cap"></div></div></section>
"""

JS = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const $ = id => document.getElementById(id);
let img = 0, cls = null, unit = null;
const pct = v => (100 * v).toFixed(1) + '%';
function facts() {
  $('facts').innerHTML = Object.entries(D.facts).map(([k, v]) => '<b>' + k + '</b> ' + esc(v)).join(' &middot; ');
  $('method-note').textContent = D.note;
}
function esc(s) { const d = document.createElement('div'); d.textContent = String(s); return d.innerHTML; }
function showImage(i) {
  img = i; const m = D.images[i];
  $('base-img').src = m.image; $('pred-img').src = m.pred;
  $('conf-img').src = m.unc || m.conf;
  $('conf-title').textContent = m.unc ? 'Uncertainty (MC dropout, ' + m.mc + ' passes)' : 'Confidence';
  $('conf-lo').textContent = m.unc ? 'certain' : 'low'; $('conf-hi').textContent = m.unc ? 'uncertain' : 'high';
  $('conf-cap').textContent = m.unc ? 'Entropy of the mean softmax over ' + m.mc + ' dropout samples / log C.'
    : 'Largest softmax probability per pixel (deterministic model: no MC-dropout uncertainty).';
  $('mc').textContent = m.unc ? 'Bayesian model: ' + m.mc + ' Monte-Carlo dropout passes' : '';
  $('unc-head').style.display = m.unc ? '' : 'none';
  table(m); $('mark').style.display = $('cell-mark').style.display = 'none';
  $('pixel-img').removeAttribute('src'); $('pixel-img').style.display = 'none';
  $('pixel-title').textContent = 'Pixel evidence';
  $('pixel-info').textContent = 'Click a pixel of the image: its evidence appears here.';
  const mapped = m.classes.filter(c => c.evidence || c.occlusion).sort((a, b) => b.share - a.share);
  selectClass(mapped.length ? mapped[0].c : null);
}
function table(m) {
  const body = $('class-table').tBodies[0]; body.innerHTML = '';
  const byC = Object.fromEntries(m.classes.map(c => [c.c, c]));
  D.classes.forEach((k, c) => {
    const s = byC[c], tr = document.createElement('tr'), has = s && (s.evidence || s.occlusion);
    tr.dataset.class = k.name; tr.className = has ? 'has' : (s && s.share > 0 ? '' : 'none');
    tr.innerHTML = '<td class="n"><span class="sw" style="background:' + k.color + '"></span>' + esc(k.name) +
      '</td><td>' + (s ? pct(s.share) : '0%') + '</td><td>' + (s && s.share > 0 ? pct(s.conf) : '') + '</td>' +
      (m.unc ? '<td>' + (s && s.share > 0 ? s.unc.toFixed(3) : '') + '</td>' : '');
    if (has) tr.onclick = () => selectClass(c);
    body.appendChild(tr);
  });
}
function selectClass(c) {
  cls = c; const m = D.images[img], s = m.classes.find(k => k.c === c);
  for (const tr of $('class-table').tBodies[0].rows) tr.classList.toggle('sel', c !== null && tr.dataset.class === D.classes[c].name);
  const name = c === null ? '' : D.classes[c].name;
  $('evidence-title').textContent = 'Class evidence' + (name ? ': ' + name : '');
  $('occlusion-title').textContent = 'Occlusion sensitivity' + (name ? ': ' + name : '');
  setMap('evidence', s && s.evidence, 'Its logits over ' + D.region + ' projected to the pixels (' + D.method +
    '); red: the magnitude of the projection, over the faded image.');
  setMap('occlusion', s && s.occlusion, 'Drop of its mean probability over ' + D.region + ' when a ' + D.patch + ' px grey patch covers each place.');
}
function setMap(kind, src, cap) {
  const el = $(kind + '-img');
  if (src) { el.src = src; $(kind + '-cap').textContent = cap; }
  else { el.removeAttribute('src'); $(kind + '-cap').textContent = 'No map for this class in this image.'; }
}
function clickPixel(ev) {
  const m = D.images[img], box = $('base-img').getBoundingClientRect();
  const x = Math.min(m.w - 1, Math.floor((ev.clientX - box.left) * m.w / box.width));
  const y = Math.min(m.h - 1, Math.floor((ev.clientY - box.top) * m.h / box.height));
  place($('mark'), x, y, m);
  if (!m.cells.length) { $('pixel-info').textContent = 'No per-pixel evidence was precomputed.'; return; }
  const r = Math.min(m.grid - 1, Math.floor(y * m.grid / m.h)), c = Math.min(m.grid - 1, Math.floor(x * m.grid / m.w));
  const cell = m.cells[r * m.grid + c]; place($('cell-mark'), cell.x, cell.y, m);
  $('pixel-img').src = cell.src; $('pixel-img').style.display = 'block';
  $('pixel-title').textContent = 'Pixel evidence: ' + D.classes[cell.label].name;
  $('pixel-info').textContent = 'Pixel (y ' + y + ', x ' + x + '): shown is the evidence of the nearest precomputed cell centre (y ' +
    cell.y + ', x ' + cell.x + ', yellow) for its predicted class ' + D.classes[cell.label].name + ' (p = ' + pct(cell.p) +
    '); per-pixel evidence is precomputed on a ' + m.grid + '×' + m.grid + ' grid.';
}
function place(el, x, y, m) {
  el.style.left = (100 * (x + 0.5) / m.w) + '%'; el.style.top = (100 * (y + 0.5) / m.h) + '%'; el.style.display = 'block';
}
function units() {
  const sel = $('layer');
  if (!D.units.length) { sel.disabled = true; $('unit-cap').textContent = 'No top-k search in this run (layers=[]).'; return; }
  D.units.forEach((u, i) => sel.add(new Option(u.layer + ' (' + u.channels.length + ' units)', i)));
  sel.onchange = () => showLayer(+sel.value); showLayer(0);
}
function showLayer(i) {
  const u = D.units[i], chips = $('channels'); chips.innerHTML = '';
  u.channels.forEach((ch, j) => {
    const b = document.createElement('button'); b.textContent = 'unit ' + ch.channel; b.onclick = () => showUnit(i, j); chips.appendChild(b);
  });
  showUnit(i, 0);
}
function showUnit(i, j) {
  const u = D.units[i], ch = u.channels[j];
  [...$('channels').children].forEach((b, k) => b.classList.toggle('sel', k === j));
  $('unit-img').src = ch.src;
  $('unit-cap').textContent = u.layer + ' unit ' + ch.channel + ': its top ' + ch.values.length +
    ' activations over the split, strongest first (' + ch.values.map(v => v.toPrecision(3)).join(', ') + '). Rows: the ' +
    u.methods.join(', ') + ' projection' + (u.methods.length > 1 ? 's' : '') + ', then the image patch (receptive field ' +
    u.rf + ' px; black = outside the image).';
}
D.images.forEach((m, i) => $('image').add(new Option(m.name, i)));
$('image').onchange = () => showImage(+$('image').value);
$('alpha').oninput = () => { $('pred-img').style.opacity = $('alpha').value / 100; };
$('alpha').oninput(); $('view').onclick = clickPixel;
facts(); units(); showImage(0);
"""

TEMPLATE = ("<!doctype html>\n<html lang='en'><meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n<title>__TITLE__</title>\n"
            "<style>" + CSS + "</style>\n<body>" + BODY +
            "<script type='application/json' id='data'>__DATA__</script>\n<script>" + JS + "</script>\n</body></html>\n")


def page(title: str, data: dict[str, Any]) -> str:
    """The page for ``data`` (JSON-embedded: ``</`` is escaped so no string can close the script)."""
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", blob)


__all__ = ["page", "TEMPLATE"]
