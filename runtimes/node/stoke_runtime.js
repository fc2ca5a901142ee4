// stoke's Node.js runtime: runs `function main(params)` functions (sync or
// returning a Promise), OpenWhisk style.
//
// Speaks the runtime protocol (docs/runtime-protocol.md): one JSON request per
// line on stdin, one JSON result per line on fd 3, logs on stdout/stderr closed
// by OpenWhisk's end-of-activation sentinel on both streams.
//
//   node stoke_runtime.js CODE_PATH [ENTRY]
//   node stoke_runtime.js --prewarm
//
// CODE_PATH is a .js file, or a directory with package.json "main" or index.js.
// With --prewarm the runtime starts before there is code (a "stem cell"): it
// says {"ready": true} on fd 3 once started; the agent then puts a function's code into the (then empty) /code and sends
// {"__stoke_init": {"code_path", "entry"}} as the first line on stdin; the
// runtime acknowledges with {"ok": true} on fd 3 and then serves requests with
// that code.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const vm = require('vm');

const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';
const CONTEXT = {
  activation_id: '__OW_ACTIVATION_ID', action_name: '__OW_ACTION_NAME',
  action_version: '__OW_ACTION_VERSION', deadline: '__OW_DEADLINE',
  namespace: '__OW_NAMESPACE', transaction_id: '__OW_TRANSACTION_ID',
};

function resolveEntryFile(codePath) {
  if (!fs.statSync(codePath).isDirectory()) return codePath;
  const pkg = path.join(codePath, 'package.json');
  if (fs.existsSync(pkg)) {
    const main = JSON.parse(fs.readFileSync(pkg, 'utf8')).main;
    if (main) return path.join(codePath, main);
  }
  return path.join(codePath, 'index.js');
}

function load(codePath, entry) {
  const file = path.resolve(resolveEntryFile(codePath));
  const source = fs.readFileSync(file, 'utf8');
  if (!/\b(module\.)?exports\b/.test(source)) {
    // OpenWhisk style: a plain script whose top-level `function main` is a
    // global. Run it in the global scope (once), with require at hand.
    global.require = require;
    vm.runInThisContext(source, { filename: file });
    if (typeof global[entry] === 'function') return global[entry];
    throw new Error(`the code defines no function ${JSON.stringify(entry)}`);
  }
  const exported = require(file);
  const fn = (exported && typeof exported[entry] === 'function') ? exported[entry]
    : (typeof exported === 'function' && entry === 'main') ? exported
    : (typeof global[entry] === 'function') ? global[entry] : null;
  if (!fn) throw new Error(`the code exports no function ${JSON.stringify(entry)}`);
  return fn;
}

function developerError(message) {
  return { error: message, __stoke: { status: 'developer_error' } };
}

function writeAll(fd, text) {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) off += fs.writeSync(fd, buf, off);
}

function samePipe(fd1, fd2) {
  try {
    const a = fs.fstatSync(fd1);
    const b = fs.fstatSync(fd2);
    return a.dev === b.dev && a.ino === b.ino;
  } catch (e) {
    return false;
  }
}

async function run() {
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  const input = lines[Symbol.asyncIterator]();
  let codePath = process.argv[2];
  let entry = process.argv[3] || 'main';
  if (codePath === '--prewarm') {
    writeAll(3, '{"ready": true}\n');  // started: a function's code now costs only its own load
    const first = await input.next();
    if (first.done) return;
    const init = JSON.parse(first.value).__stoke_init;
    codePath = init.code_path;
    entry = init.entry || 'main';
    writeAll(3, '{"ok": true}\n');
  }
  let fn = null;
  let initError = null;
  try {
    fn = load(codePath, entry);
  } catch (e) {
    initError = e;
  }
  const contextKeys = Object.entries(CONTEXT);
  // process.env becomes a plain copy (strings in, as the real one coerces):
  // an assignment to the real one is a setenv(3), which keeps every distinct
  // "name=value" string for the life of the process, so the ids that differ
  // on every call made a warm instance grow (+50 MB over 200,000 calls)
  // until its memory limit killed it. child_process passes process.env to
  // children by default, so they still see the activation's values.
  process.env = new Proxy({ ...process.env }, {
    set(target, key, value) { target[key] = String(value); return true; },
  });
  // Under stoke stdout and stderr are one pipe: both end-of-activation
  // markers then go in one write (one wake-up of the agent).
  const onePipe = samePipe(1, 2);
  const markers = onePipe ? `${SENTINEL}\n${SENTINEL}\n` : `${SENTINEL}\n`;
  for (let next = await input.next(); !next.done; next = await input.next()) {
    const line = next.value;
    const request = JSON.parse(line);
    for (const [key, env] of contextKeys) {
      if (!(key in request)) continue;
      const value = String(request[key]);
      if (process.env[env] !== value) process.env[env] = value;  // most stay the same call to call
    }
    let result;
    if (initError) {
      console.error(initError && initError.stack ? initError.stack : String(initError));
      result = developerError(`the function's code failed to load: ${initError.message || initError}`);
    } else {
      try {
        let value = fn(request.value || {});
        if (value && typeof value.then === 'function') value = await value;  // a sync result skips a tick
        result = (value && typeof value === 'object' && !Array.isArray(value))
          ? value : developerError(`main must return an object, not ${Array.isArray(value) ? 'an array' : typeof value}`);
      } catch (e) {
        console.error(e && e.stack ? e.stack : String(e));
        result = { error: String(e && e.message ? `${e.name}: ${e.message}` : e) };
      }
    }
    let text;
    try {
      text = JSON.stringify(result);
    } catch (e) {
      text = JSON.stringify(developerError(`the result is not JSON-serializable: ${e.message}`));
    }
    writeAll(1, markers);
    if (!onePipe) writeAll(2, markers);
    writeAll(3, text + '\n');
  }
}

run().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
