'use strict';

// hardcodedURLs counts the WeChat URLs an installed npm SDK keeps as string
// literals in its code (comments left out), other than the settable base
// URL fields assigned in its constructor (this.prefix = '…', this.endpoint =
// '…'). Each such URL bypasses a base URL pointed at the broker.

const fs = require('node:fs');
const path = require('node:path');

// stripComments removes // and /* */ comments outside string literals.
function stripComments(src) {
  let out = '';
  for (let i = 0; i < src.length;) {
    const c = src[i];
    if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else if (c === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      i = end < 0 ? src.length : end + 2;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

// hardcodedURLs returns {total, byHost, byFile, list} for the package
// installed under node_modules/name.
function hardcodedURLs(name) {
  const dir = path.dirname(require.resolve(`${name}/package.json`));
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === 'test') continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js')) files.push(p);
    }
  };
  walk(dir);
  const lit = /(this\.\w+\s*=\s*)?(['"`])(https?:\/\/([a-z0-9.-]*weixin\.qq\.com)[^'"`]*)\2/g;
  const res = { total: 0, byHost: {}, byFile: {}, list: [] };
  for (const f of files.sort()) {
    const code = stripComments(fs.readFileSync(f, 'utf8'));
    for (const m of code.matchAll(lit)) {
      if (m[1]) continue; // a settable field: this.prefix = '…'
      const host = m[4];
      const rel = path.relative(dir, f);
      res.total++;
      res.byHost[host] = (res.byHost[host] || 0) + 1;
      res.byFile[rel] = (res.byFile[rel] || 0) + 1;
      res.list.push(`${rel}: ${m[3]}`);
    }
  }
  return res;
}

module.exports = { hardcodedURLs, stripComments };

if (require.main === module) {
  for (const name of process.argv.slice(2)) {
    const r = hardcodedURLs(name);
    console.log(name, JSON.stringify({ total: r.total, byHost: r.byHost, byFile: r.byFile }, null, 1));
  }
}
