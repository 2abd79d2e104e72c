"""The viewer's one HTML page: inline CSS and vanilla JS, no network, no build step.

The data travels as JSON inside `<script type="application/json">` (with `<`, `>` and `&` written
as \\u escapes, so no text in a trajectory can close the element) and the script builds the DOM
with `textContent` only, so nothing from the trajectory is ever parsed as HTML. A
Content-Security-Policy forbids every fetch and allows only this page's own script, by hash:
even an injected inline script would not run.

Rendering is lazy where it pays: a sub-call's prompt, answer and child run are built when its
`<details>` is first opened, and sub-call lists longer than a few entries start folded, so a run
with 1,000 sub-calls opens as fast as one with ten.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

__all__ = ["page"]

CSS = """
:root { --fg:#1d2330; --muted:#5d6778; --bg:#f6f7f9; --card:#fff; --line:#dde1e8;
  --ok:#1f7a3a; --err:#b3261e; --warn:#a35a00; --acc:#2456b3; --code:#f3f5f8; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--fg); background:var(--bg); }
main { max-width:1120px; margin:0 auto; padding:0 16px 48px; }
pre { margin:0; white-space:pre-wrap; word-break:break-word;
  font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.bar { position:sticky; top:0; z-index:2; background:#1d2330; color:#fff; padding:8px 16px; }
.bar h1 { margin:0 0 6px; font-size:15px; font-weight:600; }
.stats { display:flex; flex-wrap:wrap; gap:6px 18px; }
.stat { display:flex; flex-direction:column; }
.stat b { font-size:11px; font-weight:500; color:#aab3c5; text-transform:uppercase;
  letter-spacing:.04em; }
.stat span { font-size:14px; font-variant-numeric:tabular-nums; }
.qa { display:grid; grid-template-columns:1fr 1fr; gap:12px; margin:14px 0; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:10px 12px; }
.card h2 { margin:0 0 6px; font-size:12px; color:var(--muted); text-transform:uppercase;
  letter-spacing:.04em; }
.notes { color:var(--warn); margin:6px 0; padding-left:18px; }
.tools { display:flex; gap:8px; align-items:center; margin:8px 0; color:var(--muted); }
button { font:inherit; padding:3px 10px; border:1px solid var(--line); border-radius:6px;
  background:#fff; cursor:pointer; }
.iter { background:var(--card); border:1px solid var(--line); border-radius:8px;
  margin:12px 0; padding:10px 12px; }
.iter { scroll-margin-top:96px; }
pre.out { max-height:480px; overflow:auto; }
.timeline > .iter { content-visibility:auto; contain-intrinsic-size:auto 420px; }
details.sub { content-visibility:auto; contain-intrinsic-size:auto 22px; }
.iter > h3 { margin:0 0 6px; font-size:14px; display:flex; flex-wrap:wrap; gap:4px 12px;
  align-items:baseline; }
.meta { color:var(--muted); font-weight:400; font-size:12px; }
.why { margin:6px 0 8px; padding:6px 10px; border-left:3px solid var(--acc); background:#f7f9fd; }
.why pre { font-family:inherit; font-size:13.5px; }
.block { border:1px solid var(--line); border-radius:6px; margin:8px 0; overflow:hidden; }
.block > .head { display:flex; gap:10px; align-items:center; padding:4px 8px;
  background:#eef1f5; font-size:12px; }
.block pre.code { background:var(--code); padding:8px 10px; }
.label { font-size:11px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em;
  padding:4px 10px 0; }
pre.out { padding:4px 10px 8px; }
pre.err, .st-error > .head, .st-crashed > .head { color:var(--err); }
pre.err { padding:6px 10px; background:#fdf0ef; border-top:1px solid #f3c9c5; }
.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:11px; font-weight:600;
  background:#e3e7ee; color:var(--fg); }
.badge.ok, .badge.final { background:#d9f0df; color:var(--ok); }
.badge.error, .badge.crashed { background:#f9dcda; color:var(--err); }
.badge.timeout, .badge.violation, .badge.stop { background:#fbe8cf; color:var(--warn); }
.badge.child { background:#e1e8fb; color:var(--acc); }
.final { margin-top:8px; padding:6px 10px; background:#eef8f0; border:1px solid #bfe3c8;
  border-radius:6px; }
.clip { color:var(--warn); font-size:12px; padding:2px 10px 6px; }
details.subs { margin:0; border-top:1px solid var(--line); }
details.subs > summary { padding:4px 8px; cursor:pointer; font-size:12px; color:var(--acc); }
.sublist { padding:2px 8px 8px; }
details.sub { border-left:2px solid var(--line); margin:3px 0 3px 4px; padding-left:8px; }
details.sub.child { border-left-color:var(--acc); }
details.sub > summary { cursor:pointer; font-size:12px; white-space:nowrap; overflow:hidden;
  text-overflow:ellipsis; }
details.sub > summary .pv { color:var(--muted); }
.subbody { padding:4px 0 6px; }
.subbody pre { background:var(--code); padding:6px 8px; border-radius:4px; margin:2px 0 6px;
  max-height:360px; overflow:auto; }
.childrun { border-left:3px solid var(--acc); padding-left:8px; margin-top:6px; }
.childrun .iter { margin:6px 0; }
.t-k { color:#8a2be2; font-weight:600; } .t-s { color:#1f7a3a; } .t-c { color:#7a8394;
  font-style:italic; } .t-n { color:#b35c00; } .t-b { color:#2456b3; }
@media (max-width:760px) { .qa { grid-template-columns:1fr; } }
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("rlm-data").textContent);
  var root = document.getElementById("app");
  var fillers = new WeakMap();  // sub-call <details> -> builds its body once, when first opened

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function txt(v) { return v === null || v === undefined ? "" : typeof v === "string" ? v : v.t; }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function cost(c) {
    if (c === null || c === undefined) return "unknown";
    return "$" + (c !== 0 && c < 0.01 ? c.toFixed(5) : c.toFixed(4));
  }
  function secs(s) {
    s = s || 0;
    return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(2) + " s";
  }
  function clipNote(v, into) {
    if (v && typeof v === "object") {
      into.appendChild(el("div", "clip", "[clipped: showing the first " + num(v.t.length) +
        " of " + num(v.n) + " characters]"));
    }
  }
  function pre(cls, v, into) {
    into.appendChild(el("pre", cls, txt(v)));
    clipNote(v, into);
  }

  var KW = "and|as|assert|async|await|break|class|continue|def|del|elif|else|except|finally|" +
    "for|from|global|if|import|in|is|lambda|nonlocal|not|or|pass|raise|return|try|while|" +
    "with|yield|None|True|False";
  var BI = "print|len|range|llm_query|llm_query_batched|rlm_query|rlm_query_batched|FINAL|" +
    "FINAL_VAR|SHOW_VARS|context|str|int|float|list|dict|set|tuple|sorted|enumerate|zip|min|max|sum|any|all|isinstance|re|json";
  var PY = new RegExp("(#[^\\n]*)|(\"\"\"[\\s\\S]*?(?:\"\"\"|$)|'''[\\s\\S]*?(?:'''|$)|" +
    "[rbfuRBFU]{0,2}\"(?:\\\\.|[^\"\\\\\\n])*\"?|[rbfuRBFU]{0,2}'(?:\\\\.|[^'\\\\\\n])*'?)|" +
    "\\b(\\d+(?:\\.\\d+)?(?:[eE][+-]?\\d+)?)\\b|\\b(" + KW + ")\\b|\\b(" + BI + ")\\b", "g");
  var KINDS = ["c", "s", "n", "k", "b"];

  function highlight(code) {
    var out = el("pre", "code"), last = 0, m;
    PY.lastIndex = 0;
    while ((m = PY.exec(code)) !== null) {
      if (m[0] === "") { PY.lastIndex++; continue; }
      if (m.index > last) out.appendChild(document.createTextNode(code.slice(last, m.index)));
      var k = 0;
      while (m[k + 1] === undefined) k++;
      out.appendChild(el("span", "t-" + KINDS[k], m[0]));
      last = m.index + m[0].length;
    }
    if (last < code.length) out.appendChild(document.createTextNode(code.slice(last)));
    return out;
  }

  function countSubs(its) {
    var n = 0;
    its.forEach(function (it) {
      it.b.forEach(function (b) {
        b.sub.forEach(function (s) { n += 1 + countSubs(s.it); });
      });
    });
    return n;
  }

  function stat(into, label, value) {
    var s = el("div", "stat");
    s.appendChild(el("b", null, label));
    s.appendChild(el("span", null, value));
    into.appendChild(s);
  }

  function summary() {
    var S = D.summary, bar = el("header", "bar");
    bar.appendChild(el("h1", null, D.title));
    var st = el("div", "stats");
    stat(st, "stop reason", S.complete ? S.stop : "incomplete");
    stat(st, "iterations", num(S.iterations));
    stat(st, "sub-calls", num(S.sub_calls));
    stat(st, "tokens in", num(S.tokens_in));
    stat(st, "tokens out", num(S.tokens_out));
    stat(st, "cost", cost(S.cost) + (S.unpriced.length ? " (+ unpriced)" : ""));
    stat(st, "wall time", secs(S.wall));
    stat(st, "models", S.models.map(function (m) {
      return m.calls === null ? m.name : m.name + " \u00d7" + m.calls;
    }).join(", ") || "-");
    if (S.context.chars !== null && S.context.chars !== undefined) {
      stat(st, "context", num(S.context.chars) + " chars, " + num(S.context.documents) + " doc(s)");
    }
    bar.appendChild(st);
    return bar;
  }

  function questionAnswer(into) {
    var S = D.summary, qa = el("section", "qa");
    var q = el("div", "card");
    q.appendChild(el("h2", null, "Question"));
    pre("question", S.question || "(none given)", q);
    var a = el("div", "card");
    a.appendChild(el("h2", null, "Answer"));
    pre("answer", S.answer === null ? "(no answer: the run did not finish)" : S.answer, a);
    qa.appendChild(q);
    qa.appendChild(a);
    into.appendChild(qa);
    var limits = Object.keys(S.limits).map(function (k) { return k + " " + S.limits[k]; });
    if (limits.length) into.appendChild(el("div", "limits meta", "Limits: " + limits.join(", ")));
    if (S.notes.length) {
      var ul = el("ul", "notes");
      S.notes.forEach(function (n) { ul.appendChild(el("li", null, n)); });
      into.appendChild(ul);
    }
    if (txt(D.system)) {
      var d = el("details", "card system");
      d.appendChild(el("summary", null, "System prompt"));
      pre("sys", D.system, d);
      into.appendChild(d);
    }
  }

  function subBody(d, s, depth) {
    var body = el("div", "subbody");
    body.appendChild(el("div", "label", "Prompt (" + num(s.pc) + " chars)"));
    pre("prompt", s.p, body);
    if (txt(s.p).length < s.pc) {
      body.appendChild(el("div", "clip", "[the trajectory keeps the first " +
        num(txt(s.p).length) + " of " + num(s.pc) + " characters]"));
    }
    body.appendChild(el("div", "label", "Answer (" + num(s.rc) + " chars)"));
    pre("response", s.r, body);
    if (s.it.length) {
      var run = el("div", "childrun");
      run.appendChild(el("div", "label", "Child RLM run at depth " + s.d + ": " +
        s.it.length + " iteration(s)"));
      s.it.forEach(function (it) { run.appendChild(iteration(it, depth + 1)); });
      body.appendChild(run);
    }
    d.appendChild(body);
  }

  function subNode(s, depth) {
    var d = el("details", "sub" + (s.c ? " child" : ""));
    d.setAttribute("data-depth", String(s.d));
    var sm = el("summary");
    sm.appendChild(el("b", null, "#" + s.i + " "));
    if (s.c) sm.appendChild(el("span", "badge child", "child RLM"));
    sm.appendChild(document.createTextNode(" " + s.m + " \u00b7 " + num(s.ti) + " in / " +
      num(s.to) + " out \u00b7 " + cost(s["$"]) + " \u00b7 " + secs(s.s) + " \u00b7 "));
    sm.appendChild(el("span", "pv", txt(s.p).slice(0, 160).replace(/\s+/g, " ")));
    d.appendChild(sm);
    var filled = false;
    fillers.set(d, function () {
      if (!filled) { filled = true; subBody(d, s, depth); }
    });
    d.addEventListener("toggle", function () { if (d.open) fillers.get(d)(); });
    return d;
  }

  function subList(subs, depth) {
    var d = el("details", "subs"), ti = 0, to = 0, c = 0, t = 0, unknown = false;
    subs.forEach(function (s) {
      ti += s.ti; to += s.to; t += s.s;
      if (s["$"] === null || s["$"] === undefined) unknown = true; else c += s["$"];
    });
    d.open = subs.length <= 8;
    d.appendChild(el("summary", null, subs.length + " sub-call" + (subs.length === 1 ? "" : "s") +
      " \u00b7 " + num(ti) + " in / " + num(to) + " out \u00b7 " + (unknown ? "\u2265 " : "") +
      cost(c) + " \u00b7 " + secs(t) + " summed"));
    var list = el("div", "sublist");
    subs.forEach(function (s) { list.appendChild(subNode(s, depth)); });
    d.appendChild(list);
    return d;
  }

  function block(b, k, depth) {
    var box = el("div", "block st-" + b.st);
    var head = el("div", "head");
    head.appendChild(el("b", null, "Code block " + k));
    head.appendChild(el("span", "badge " + b.st, b.st));
    head.appendChild(el("span", "meta", secs(b.s) + (b.sub.length ? " \u00b7 " + b.sub.length +
      " sub-call(s)" : "")));
    box.appendChild(head);
    box.appendChild(highlight(txt(b.code)));
    clipNote(b.code, box);
    if (txt(b.out)) {
      box.appendChild(el("div", "label", "Output"));
      pre("out", b.out, box);
    }
    if (b.tr) box.appendChild(el("div", "clip", "[output truncated by the sandbox]"));
    if (b.err !== null) pre("err", b.err, box);
    if (b.sub.length) box.appendChild(subList(b.sub, depth));
    (b.tools || []).forEach(function (t) {
      var line = el("div", "tool");
      line.appendChild(el("span", "badge " + (t.ok ? "ok" : "error"), "tool " + txt(t.n)));
      pre("tool-call", txt(t.a) + (t.ok ? " \u2192 " + txt(t.r) : " \u2192 " + txt(t.e)) +
        " (" + secs(t.s) + ")", line);
      box.appendChild(line);
    });
    return box;
  }

  function iteration(it, depth) {
    var sec = el("section", "iter");
    sec.setAttribute("data-depth", String(depth));
    var h = el("h3", null, (depth ? "Child iteration " : "Iteration ") + it.n);
    var subs = countSubs([it]);
    h.appendChild(el("span", "meta", secs(it.s) + " \u00b7 " + num(it.ti) + " in / " +
      num(it.to) + " out tokens \u00b7 " + num(it.pc) + " prompt chars \u00b7 " + it.b.length +
      " block(s)" + (subs ? " \u00b7 " + subs + " sub-call(s)" : "")));
    if (it.fin !== null) h.appendChild(el("span", "badge final", "FINAL"));
    sec.appendChild(h);
    if (it.cmp) {
      var c = el("div", "compaction");
      c.appendChild(el("b", null, "Compacted: " + num(it.cmp.n) + " earlier message(s), " +
        num(it.cmp.before) + " \u2192 " + num(it.cmp.after) + " chars. Summary: "));
      pre("summary", it.cmp.sum, c);
      sec.appendChild(c);
    }
    if (txt(it.why)) {
      var why = el("div", "why");
      pre("reasoning", it.why, why);
      sec.appendChild(why);
    }
    it.b.forEach(function (b, i) { sec.appendChild(block(b, i + 1, depth)); });
    if (it.fin !== null) {
      var f = el("div", "final");
      f.appendChild(el("b", null, "Final answer: "));
      pre("final-answer", it.fin, f);
      sec.appendChild(f);
    }
    return sec;
  }

  function setAll(open) {
    // Build every body in this one task (not in 1,000 toggle tasks, each followed by a layout).
    var all = document.querySelectorAll("details.subs, details.sub");
    for (var i = 0; i < all.length; i++) {
      if (open && fillers.has(all[i])) fillers.get(all[i])();
      all[i].open = open;
    }
  }

  function render() {
    document.body.insertBefore(summary(), root);
    questionAnswer(root);
    var tools = el("div", "tools");
    tools.appendChild(el("span", null, "Timeline: " + D.iterations.length + " iteration(s)"));
    var openAll = el("button", null, "Open all sub-calls");
    openAll.addEventListener("click", function () { setAll(true); });
    var closeAll = el("button", null, "Close all");
    closeAll.addEventListener("click", function () { setAll(false); });
    tools.appendChild(openAll);
    tools.appendChild(closeAll);
    root.appendChild(tools);
    var tl = el("div", "timeline");
    D.iterations.forEach(function (it) { tl.appendChild(iteration(it, 0)); });
    root.appendChild(tl);
    document.body.setAttribute("data-rendered", "1");
    if (window.performance && performance.mark) performance.mark("rlm-rendered");
  }

  render();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
style-src 'unsafe-inline'; script-src '{script_hash}'; img-src data:">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main id="app"><noscript>This page needs JavaScript to show the trajectory.</noscript></main>
<script type="application/json" id="rlm-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&` appears literally."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def page(view: dict[str, Any]) -> str:
    """The whole HTML document for one view (see `_model.build_view`)."""
    return _TEMPLATE.format(
        title=html.escape(str(view.get("title") or "RLM trajectory")),
        css=CSS,
        data=_script_json(view),
        js=JS,
        script_hash=_csp_hash(JS),
    )
