// loadkit --slo expressions as k6 thresholds, so a k6 run of a loadkit scenario is gated like a Locust run.
//
//   k6 run -e SLO="ttft:p95<500ms;sendmsg:fail_rate<1%" -e HOST=ws://127.0.0.1:8765 k6/chldo_stream.js
//
// Grammar (as loadkit's --slo; several separated by ';'): [TYPE:]NAME:STAT OP NUMBER[UNIT]
//   STAT pNN[.N] | median | mean | min | max  → threshold on the Trend NAME (ms; UNIT ms or s)
//   STAT fail_rate (UNIT % or a fraction)     → threshold on the Rate loadkit_fail_rate{op:NAME}
// rps and goodput have no k6 threshold of the same meaning: such an SLO stops the script at start
// with a clear error instead of being silently ignored. A failed threshold makes k6 exit with 99.

const EXPR = /^\s*([^<>=]+?)\s*:\s*(p\d+(?:\.\d+)?|median|mean|min|max|fail_rate|rps|goodput)\s*(<=|>=|<|>)\s*(\d+\.?\d*|\.\d+)\s*(ms|s|%|\/s)?\s*$/;
const AGG = { median: 'med', mean: 'avg', min: 'min', max: 'max' };

// SLO text -> {metric name: [k6 threshold expressions]}
export function sloThresholds(text) {
  const out = {};
  for (const part of String(text || '').split(';').map((p) => p.trim()).filter((p) => p)) {
    const m = part.match(EXPR);
    if (!m) {
      throw new Error(`SLO '${part}': expected [TYPE:]NAME:STAT OP NUMBER[UNIT], e.g. ttft:p95<500ms`);
    }
    const subject = m[1];
    const name = subject.includes(':') ? subject.slice(subject.indexOf(':') + 1).trim() : subject;
    const [stat, op, unit] = [m[2], m[3], m[5] || ''];
    let value = parseFloat(m[4]);
    let metric;
    let expr;
    if (stat === 'fail_rate') {
      if (unit !== '' && unit !== '%') throw new Error(`SLO '${part}': fail_rate takes % or a fraction`);
      value = unit === '%' ? value / 100 : value;
      metric = `loadkit_fail_rate{op:${name}}`;
      expr = `rate${op}${value}`;
    } else if (stat === 'rps' || stat === 'goodput') {
      throw new Error(`SLO '${part}': ${stat} has no k6 threshold of the same meaning; gate it in the Locust run`);
    } else {
      if (unit === '%' || unit === '/s') throw new Error(`SLO '${part}': ${stat} takes ms or s`);
      value = unit === 's' ? value * 1000 : value;
      metric = name;
      expr = `${stat.startsWith('p') ? `p(${stat.slice(1)})` : AGG[stat]}${op}${value}`;
    }
    (out[metric] = out[metric] || []).push(expr);
  }
  return out;
}
