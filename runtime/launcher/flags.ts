/**
 * The runtime's own options, in one table: `--overpack-<name>` on the command line (never
 * passed to the app), some also as an environment variable. The parser, `--overpack-help`
 * and the messages that say where a setting came from are all made from it.
 */
import { LaunchError } from './launch-error.js';
import { EXIT } from '../errors/exit-codes.js';

interface FlagSpec {
  name: string;
  help: string;
  /** Takes a value: `required` (`--overpack-x V` or `=V`), `optional` (only when the next word is no option). */
  value?: 'required' | 'optional';
  /** The value's name in the help, and what it is (for the message when it is missing). */
  arg?: string;
  what?: string;
  /** The environment variable that sets it when the command line does not ("1" for a switch). */
  env?: string;
}

const FLAG_TABLE = [
  { name: 'help', help: 'this help' },
  { name: 'version', help: 'app and runtime versions' },
  { name: 'info', help: 'manifest, image hash and the paths this bundle uses' },
  { name: 'extract', value: 'optional', arg: 'DIR', help: "write the app's files to DIR (default ./<name>-<version>) and exit" },
  { name: 'mount', help: "mount the app's overlay, print its path, serve until interrupted" },
  { name: 'extract-and-run', env: 'OVERPACK_EXTRACT_AND_RUN', help: 'run without FUSE: extract to a temporary directory and run there (changes are not kept)' },
  { name: 'discard', help: 'this run only: start from a clean writable layer and drop it after' },
  { name: 'reset', help: "delete the app's preserved writable layer (asks first)" },
  { name: 'yes', help: 'with --overpack-reset: do not ask' },
  { name: 'verify-signature', value: 'required', arg: 'PUB.pem', what: 'the public key file', env: 'OVERPACK_VERIFY_SIGNATURE', help: 'refuse to start unless this bundle is signed by that key' },
  { name: 'integrate', help: "add this app to the desktop's menu, with its icon (a later run from another path or of a newer build updates the entry)" },
  { name: 'unintegrate', help: 'remove exactly what --overpack-integrate wrote' },
  { name: 'update', help: "update this bundle in place from its manifest's update URL, downloading only what changed (signed by the same key, checked, then renamed over this file; resumes when interrupted); asks first unless --overpack-yes" },
  { name: 'check', help: 'with --overpack-update: only say whether an update exists (exit 0 yes, 1 no)' },
  { name: 'update-from', value: 'required', arg: 'URL|FILE', what: "the new bundle's URL or file", help: 'with --overpack-update: another source' },
  { name: 'channel', value: 'required', arg: 'NAME', what: 'a channel name', help: 'with --overpack-update: another channel' },
  { name: 'accept-key', value: 'required', arg: 'KEY', what: 'the new key (base64, or its .pub file)', help: 'with --overpack-update: accept an update signed by this new key (base64 or .pub)' },
  { name: 'allow-downgrade', help: 'with --overpack-update: accept an older version (refused by default)' },
] as const satisfies readonly FlagSpec[];

type Spec = (typeof FLAG_TABLE)[number];
export type FlagName = Spec['name'];
/** A switch is a boolean; a value is a string, undefined when not given (`optional`: null when given without one). */
export type Flags = { [S in Spec as S['name']]: S extends { value: 'optional' } ? string | null | undefined : S extends { value: 'required' } ? string | undefined : boolean };

/** Settings that exist only in the environment. */
export const ENV_SETTINGS = [
  { env: 'OVERPACK_LINGER', arg: 'SECONDS', help: "how long the app's mount stays served after it exits, so a relaunch starts warm (default: the manifest's overlay.linger, else 5; 0: unmount at once)" },
  { env: 'OVERPACK_EXPRESS', arg: '0', help: "a relaunch that joins the app's lingering mount starts the runtime (by default the bundle's loader runs the app there itself, see README: the express relaunch)" },
  { env: 'OVERPACK_SEPARATE_APP_PROCESS', arg: '1', help: "a Node app gets a process of its own even in a mount another process serves (by default it then runs in the launch's own process: one Node start-up fewer)" },
] as const;

export interface ParsedFlags {
  flags: Flags;
  appArgs: string[];
  /** Where each given setting came from, for messages: `--overpack-verify-signature k.pem`, `OVERPACK_VERIFY_SIGNATURE=k.pem`. */
  from: Partial<Record<FlagName, string>>;
}

/** Splits `--overpack-*` runtime flags from the app's arguments, then fills in the environment's. */
export function parseFlags(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedFlags {
  const values: Record<string, string | boolean | null | undefined> = Object.fromEntries(FLAG_TABLE.map((s) => [s.name, 'value' in s ? undefined : false]));
  const from: Partial<Record<FlagName, string>> = {};
  const appArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--overpack-')) {
      appArgs.push(a);
      continue;
    }
    const [name, inline] = a.slice('--overpack-'.length).split('=', 2) as [string, string | undefined];
    const spec: FlagSpec | undefined = FLAG_TABLE.find((s) => s.name === name);
    if (!spec) throw new LaunchError(`unknown runtime option --overpack-${name} (see --overpack-help)`, EXIT.usage);
    let value: string | boolean | null = true;
    if (spec.value === 'required') {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new LaunchError(`--overpack-${name} needs ${spec.what ?? spec.arg}: --overpack-${name} <${spec.arg?.toLowerCase()}>`, EXIT.usage);
      value = v;
    } else if (spec.value === 'optional') {
      const next = argv[i + 1];
      value = inline ?? (next !== undefined && !next.startsWith('-') ? argv[++i]! : null);
    } else if (inline !== undefined) {
      throw new LaunchError(`--overpack-${name} takes no value`, EXIT.usage);
    }
    values[name] = value;
    from[name as FlagName] = typeof value === 'string' ? `--overpack-${name} ${value}` : `--overpack-${name}`;
  }
  for (const spec of FLAG_TABLE as readonly FlagSpec[]) {
    const v = spec.env ? env[spec.env] : undefined;
    if (from[spec.name as FlagName] !== undefined || v === undefined || v === '') continue;
    if (spec.value) values[spec.name] = v;
    else if (v === '1') values[spec.name] = true;
    else continue; // a switch is set by "1" only
    from[spec.name as FlagName] = `${spec.env}=${v}`;
  }
  return { flags: values as Flags, appArgs, from };
}

/** --overpack-help, from the tables. */
export function flagsHelp(): string {
  const col = 30;
  const wrap = (text: string, indent: number) => {
    const words = text.split(' ');
    const lines: string[] = [];
    let line = '';
    for (const w of words) {
      if (line && indent + line.length + 1 + w.length > 96) (lines.push(line), (line = w));
      else line = line ? `${line} ${w}` : w;
    }
    lines.push(line);
    return lines.join(`\n${' '.repeat(indent)}`);
  };
  // A long option gets its help on the next line.
  const row = (left: string, help: string) => `  ${left.length > col - 3 ? `${left}\n${' '.repeat(col + 1)}` : left.padEnd(col - 2) + ' '}${wrap(help, col + 1)}`;
  const flags = (FLAG_TABLE as readonly FlagSpec[]).map((s) => {
    const left = `--overpack-${s.name}${s.value === 'required' ? ` ${s.arg}` : s.value === 'optional' ? ` [${s.arg}]` : ''}`;
    const env = s.env ? ` (also: ${s.env}=${s.value ? s.arg : '1'})` : '';
    return row(left, s.help + env);
  });
  const envs = ENV_SETTINGS.map((e) => row(`${e.env}=${e.arg}`, e.help));
  return `Runtime options of this overpack bundle (never passed to the app):
${flags.join('\n')}
Environment:
${envs.join('\n')}
Errors are also written to $XDG_STATE_HOME/overpack/<app>.log, and shown as a desktop
notification when there is no terminal.
`;
}
