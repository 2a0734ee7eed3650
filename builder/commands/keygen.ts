/** `overpack keygen <prefix>`: an Ed25519 key pair for `overpack build --sign`. */
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import type { Argv, CommandModule } from 'yargs';
import { fingerprint, rawPublicKey } from '../../runtime/image/signature.js';
import { fail, say } from '../output.js';

/** Creates `file` with `mode`, never through an existing file or symlink. */
function writeNew(file: string, data: string, mode: number): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EEXIST') fail(`${file} already exists; choose another prefix, or pass --force to replace the key pair`, 1);
    fail(`cannot create ${file}: ${e.message}`, 1);
  }
  try {
    fs.fchmodSync(fd, mode); // whatever the umask says
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export const keygenCommand: CommandModule<object, { prefix: string; force: boolean }> = {
  command: 'keygen <prefix>',
  describe: 'Make an Ed25519 key pair for signing bundles: <prefix>.key (private, 0600) and <prefix>.pub',
  builder: (y: Argv) =>
    y
      .positional('prefix', { type: 'string', demandOption: true, describe: 'Path and name of the key files, without extension' })
      .option('force', { type: 'boolean', default: false, describe: 'Replace existing <prefix>.key and <prefix>.pub' })
      .epilog('Sign with `overpack build <app> --sign <prefix>.key`; check with `overpack verify <bundle> --key <prefix>.pub`; pin the key in overpack.json with "security": {"publicKey": "<the base64 printed here>"}.') as unknown as Argv<{ prefix: string; force: boolean }>,
  handler: (args) => {
    const prefix = path.resolve(args.prefix);
    const keyFile = `${prefix}.key`;
    const pubFile = `${prefix}.pub`;
    if (!fs.existsSync(path.dirname(prefix))) fail(`${path.dirname(prefix)} does not exist; create it first`, 1);
    if (args.force) for (const f of [keyFile, pubFile]) fs.rmSync(f, { force: true });
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeNew(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    writeNew(pubFile, publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
    const raw = rawPublicKey(publicKey);
    say(`wrote ${keyFile} (private: keep it secret, mode 0600) and ${pubFile}; key ${fingerprint(raw)}`);
    process.stdout.write(`${raw.toString('base64')}\n`);
  },
};
