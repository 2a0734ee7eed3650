/**
 * The single executable's first code (the esbuild entry point of the runtime). In node mode
 * (the bundle acting as `node` for a .js entrypoint, a `#!/usr/bin/env node` script or fork())
 * it runs the script at once; only a real launch loads the runtime in main.ts.
 *
 * Why: a .js app costs two Node start-ups (the runtime, then the app on the bundle's Node).
 * esbuild keeps main.ts and everything it imports in this same file, but behind the require()
 * below it wraps them in lazily called init functions, so in node mode none of the runtime's
 * module code runs and none of its built-ins (crypto, child_process, fs/promises, ...) load.
 * Node mode then starts as fast as plain `node` (bench/README, figures behind the code).
 * Keep this file free of imports beyond node:module, node:path and node:fs.
 */
import path = require('node:path');
import nodeModule = require('node:module');
import fs = require('node:fs');

/** OVERPACK_TRACE=1: the same timeline marks as trace.ts (inlined: this file stays import-free). */
function mark(label: string): void {
  if (process.env.OVERPACK_TRACE !== '1') return;
  const now = performance.now();
  fs.writeSync(2, `overpack-trace ${process.pid} ${(performance.timeOrigin + now).toFixed(2)} +${now.toFixed(2)} ${label}\n`);
}

/** The bundle acting as `node`: `<bundle> script.js args...`, `-e CODE`, `-v`. */
function runAsNode(): void {
  mark('node mode: start');
  if (process.env.OVERPACK_TRACE === '1') process.on('exit', () => mark('node mode: exit'));
  // Started by the runtime before its mount was ready (see startApp in main.ts): wait for "1" on
  // the gate, a blocking read (this process has nothing else to do yet). End of file means the
  // launch failed or the runtime died: leave quietly, the runtime reports why.
  const gate = process.env.OVERPACK_NODE_GATE;
  if (gate !== undefined) {
    delete process.env.OVERPACK_NODE_GATE;
    const fd = Number(gate);
    const b = Buffer.alloc(1);
    let n = 0;
    try {
      n = fs.readSync(fd, b, 0, 1, null);
    } catch {
      /* as end of file */
    }
    try {
      fs.closeSync(fd);
    } catch {
      /* the app must not see it; it is gone either way */
    }
    if (n !== 1 || b[0] !== 0x31) process.exit(70);
    mark('node mode: gate open');
  }
  // fork() and spawn(process.execPath) from the app then start the plain Node (plain-node.ts),
  // which takes Node's whole command line (execArgv included).
  const plain = process.env.OVERPACK_NODE;
  if (plain) process.execPath = plain;
  // In a single-executable application argv[1] repeats the executable; the script follows.
  const args = process.argv.slice(2);
  if (args[0] === '-v' || args[0] === '--version') {
    process.stdout.write(`${process.version}\n`);
    return;
  }
  if (args[0] === '-e' || args[0] === '--eval') {
    process.argv = [process.execPath, ...args.slice(2)];
    new Function('require', args[1] ?? '')(nodeModule.createRequire(path.join(process.cwd(), '[eval]')));
    return;
  }
  if (!args[0]) {
    process.stderr.write('overpack: error: node mode needs a script to run\n');
    process.exit(2);
  }
  process.argv = [process.execPath, path.resolve(args[0]), ...args.slice(1)];
  (nodeModule.Module as unknown as { runMain: () => void }).runMain();
}

// The dispatch variable names the runtime it is meant for: another bundle that the app starts
// is a launch of its own, not node; so is one started through its loader (which names it in
// OVERPACK_LOADED_FROM) even when it shares this runtime file.
const dispatched = process.env.OVERPACK_NODE_DISPATCH === process.execPath && process.env.OVERPACK_LOADED_FROM === undefined;
if (dispatched || path.basename(process.argv0) === 'node') runAsNode();
else {
  mark('runtime: entry');
  require('./main.js');
}
