// stoke's Node.js runtime: runs `function main(params)` functions (sync or
// returning a Promise), OpenWhisk style.
//
// Speaks the runtime protocol (docs/runtime-protocol.md): one JSON request per
// line on stdin, one JSON result per line on fd 3, logs on stdout/stderr closed
// by OpenWhisk's end-of-activation sentinel on both streams.
//
//   node stoke_runtime.js CODE_PATH [ENTRY]
//
// CODE_PATH is a .js file, or a directory with package.json "main" or index.js.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

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
  const file = resolveEntryFile(codePath);
  const exported = require(path.resolve(file));
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

async function run() {
  const codePath = process.argv[2];
  const entry = process.argv[3] || 'main';
  let fn = null;
  let initError = null;
  try {
    fn = load(codePath, entry);
  } catch (e) {
    initError = e;
  }
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const request = JSON.parse(line);
    for (const [key, env] of Object.entries(CONTEXT)) {
      if (key in request) process.env[env] = String(request[key]);
    }
    let result;
    if (initError) {
      console.error(initError && initError.stack ? initError.stack : String(initError));
      result = developerError(`the function's code failed to load: ${initError.message || initError}`);
    } else {
      try {
        const value = await fn(request.value || {});
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
    writeAll(1, SENTINEL + '\n');
    writeAll(2, SENTINEL + '\n');
    writeAll(3, text + '\n');
  }
}

run().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
