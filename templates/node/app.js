#!/usr/bin/env node
// A Node CLI run by the Node inside the bundle: `set KEY VALUE` stores a setting in
// settings.json in its own directory (kept between runs by the overlay), `get KEY` prints it,
// no arguments prints them all. Exit code 2 for unknown commands.
'use strict';
const { load, save } = require('./lib/settings');

const [cmd, key, value] = process.argv.slice(2);
const settings = load();
if (cmd === 'set' && key) {
  settings[key] = value ?? '';
  save(settings);
  console.log(`${key}=${settings[key]}`);
} else if (cmd === 'get' && key) {
  if (!(key in settings)) process.exit(1);
  console.log(settings[key]);
} else if (!cmd) {
  console.log(`${process.env.GREETING} from node ${process.version}; settings: ${JSON.stringify(settings)}`);
} else {
  console.error('usage: hello-node [set KEY VALUE | get KEY]');
  process.exit(2);
}
