// llm-proxy console: a bar chart in SVG, drawn by hand. Bars (with an optional highlighted
// part, e.g. errors), an optional line on a second axis (e.g. spend), a tooltip per column.
// Drawn at the width it is given, one unit a pixel, and again when that width changes.
"use strict";

(() => {
  const ui = (globalThis.llmProxyConsole ??= { pages: {} });
  const { h, svg } = ui;

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // points: [{label, bar, part?, line?, detail}]; options: {height, summary, lineLabel?}
  ui.barChart = (points, options) => {
    const box = h("div", { class: "chart" });
    box.style.minHeight = `${options.height}px`; // no jump when it is drawn
    let drawnWidth = 0;
    const observer = new ResizeObserver(() => {
      if (!box.isConnected) return observer.disconnect();
      const width = Math.round(box.clientWidth);
      if (width > 0 && width !== drawnWidth) {
        drawnWidth = width;
        box.replaceChildren(...draw(points, options, width));
      }
    });
    observer.observe(box);
    return box;
  };

  function frame(points, options, width) {
    const height = options.height;
    const pad = { top: 12, right: options.lineLabel ? 60 : 8, bottom: 26, left: 44 };
    const plotH = height - pad.top - pad.bottom;
    const barMax = niceMax(Math.max(0, ...points.map((p) => p.bar)));
    const lineMax = niceMax(Math.max(0, ...points.map((p) => p.line || 0)));
    return {
      width,
      height,
      pad,
      plotH,
      barMax,
      lineMax,
      step: (width - pad.left - pad.right) / Math.max(points.length, 1),
      y: (value, max) => pad.top + plotH - (value / max) * plotH,
    };
  }

  function draw(points, options, width) {
    const f = frame(points, options, width);
    const chart = svg("svg", { width, height: f.height, viewBox: `0 0 ${width} ${f.height}`, role: "img", "aria-label": options.summary });
    const tip = h("div", { class: "tooltip", hidden: true });
    chart.append(...axes(f, options.lineLabel));
    const labelEvery = Math.ceil((points.length * 64) / Math.max(width - f.pad.left - f.pad.right, 1));
    points.forEach((point, i) => {
      chart.append(column(f, point, i, tip));
      if (i % labelEvery === 0) {
        chart.append(svg("text", { x: f.pad.left + (i + 0.5) * f.step, y: f.height - 6, "text-anchor": "middle" }, point.label));
      }
    });
    if (options.lineLabel && points.length) chart.append(...line(f, points));
    return [chart, tip];
  }

  function axes(f, lineLabel) {
    const parts = [];
    for (let i = 0; i <= 4; i += 1) {
      const y = f.y((f.barMax * i) / 4, f.barMax);
      parts.push(svg("line", { class: "grid", x1: f.pad.left, x2: f.width - f.pad.right, y1: y, y2: y }));
      parts.push(svg("text", { x: f.pad.left - 8, y: y + 4, "text-anchor": "end" }, ui.compact((f.barMax * i) / 4)));
      if (lineLabel) parts.push(svg("text", { x: f.width - f.pad.right + 8, y: y + 4 }, lineLabel((f.lineMax * i) / 4)));
    }
    return parts;
  }

  function column(f, point, i, tip) {
    const x = f.pad.left + i * f.step;
    const barW = Math.max(2, Math.min(40, f.step * 0.64));
    const bar = (className, value) => {
      const top = f.y(value, f.barMax);
      return svg("rect", { class: className, x: x + (f.step - barW) / 2, y: top, width: barW, height: f.pad.top + f.plotH - top, rx: 2 });
    };
    const group = svg(
      "g",
      { class: "col" },
      svg("rect", { class: "col-hit", x, y: f.pad.top, width: f.step, height: f.plotH }),
      bar("bar-req", point.bar),
      point.part ? bar("bar-err", point.part) : null,
      svg("title", {}, `${point.label}: ${point.detail}`),
    );
    group.addEventListener("mouseenter", () => {
      tip.textContent = `${point.label} · ${point.detail}`;
      tip.hidden = false;
      tip.style.left = `${x + f.step / 2}px`;
      tip.style.top = `${Math.min(f.y(point.bar, f.barMax), f.pad.top + f.plotH - 8)}px`;
    });
    group.addEventListener("mouseleave", () => {
      tip.hidden = true;
    });
    return group;
  }

  function line(f, points) {
    const coords = points.map((p, i) => [f.pad.left + (i + 0.5) * f.step, f.y(p.line || 0, f.lineMax)]);
    const parts = [svg("polyline", { class: "line-spend", points: coords.map((c) => c.join(",")).join(" ") })];
    if (f.step >= 12) for (const [cx, cy] of coords) parts.push(svg("circle", { class: "dot-spend", cx, cy, r: 3 }));
    return parts;
  }
})();
