/**
 * POSIX conformance of the mount: the same calls on the mount and on a plain directory must
 * give the same results (sizes, contents, errors). Each case prepares identical trees in both
 * places, runs the same calls on each, and compares what came out.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startMount, tempDir, type MountProcess } from './helpers.js';

const C = fs.constants;

/** Every combination of the access mode with O_TRUNC, O_CREAT, O_APPEND and O_EXCL. */
function openFlagMatrix(): Array<{ label: string; flags: number }> {
  const out: Array<{ label: string; flags: number }> = [];
  for (const [acc, accName] of [[C.O_RDONLY, 'r'], [C.O_WRONLY, 'w'], [C.O_RDWR, 'rw']] as const) {
    for (let bits = 0; bits < 16; bits++) {
      let flags = acc;
      let label = accName;
      if (bits & 1) (flags |= C.O_TRUNC), (label += '+trunc');
      if (bits & 2) (flags |= C.O_CREAT), (label += '+creat');
      if (bits & 4) (flags |= C.O_APPEND), (label += '+append');
      if (bits & 8) (flags |= C.O_EXCL), (label += '+excl');
      out.push({ label, flags });
    }
  }
  return out;
}

/** Open with `flags`, write short contents where the open allows writing, and report what happened. */
function openAndWrite(file: string, flags: number): string {
  let fd: number;
  try {
    fd = fs.openSync(file, flags, 0o644);
  } catch (err) {
    return `open ${(err as NodeJS.ErrnoException).code}`;
  }
  let wrote = 'no write';
  try {
    if ((flags & (C.O_WRONLY | C.O_RDWR)) !== 0) {
      fs.writeSync(fd, 'xy');
      wrote = 'wrote';
    }
    const st = fs.fstatSync(fd);
    wrote += ` fstat size ${st.size}`;
  } catch (err) {
    wrote = `write ${(err as NodeJS.ErrnoException).code}`;
  } finally {
    fs.closeSync(fd);
  }
  return `open ok, ${wrote}`;
}

/** What a path holds afterwards: its type, size and contents (or the error of lstat). */
function describePath(file: string): string {
  try {
    const st = fs.lstatSync(file);
    if (st.isSymbolicLink()) return `symlink -> ${fs.readlinkSync(file)}`;
    return `${st.isFile() ? 'file' : 'other'} size ${st.size} ${JSON.stringify(fs.readFileSync(file, 'utf8'))}`;
  } catch (err) {
    return `lstat ${(err as NodeJS.ErrnoException).code}`;
  }
}

interface Pair {
  base: string;
  lower: string;
  plain: string;
  mnt: string;
  mount: MountProcess | undefined;
}

/** A lower directory (mounted with an upper) and a plain directory, both filled by `fill`. */
function pair(tag: string): Pair {
  const base = tempDir(tag);
  const p: Pair = { base, lower: path.join(base, 'lower'), plain: path.join(base, 'plain'), mnt: path.join(base, 'mnt'), mount: undefined };
  fs.mkdirSync(p.lower);
  fs.mkdirSync(p.plain);
  return p;
}

async function mountPair(p: Pair): Promise<void> {
  p.mount = await startMount(p.lower, ['--upper', path.join(p.base, 'upper'), '--mountpoint', p.mnt]);
}

async function teardown(p: Pair): Promise<void> {
  await p.mount?.stop();
  fs.rmSync(p.base, { recursive: true, force: true });
}

describe('open flags: every combination on lower, upper, copied-up and symlinked files', () => {
  const p = pair('conf-open');
  const matrix = openFlagMatrix();
  // Where a file starts in the overlay; the plain directory gets the same file by ordinary means.
  const kinds = ['lower', 'upper', 'copied', 'symlink', 'missing'] as const;
  const OLD = 'old contents, longer than what is written\n';
  const name = (kind: string, label: string) => `${kind}-${label}`;

  before(async () => {
    for (const { label } of matrix) {
      fs.writeFileSync(path.join(p.lower, name('lower', label)), OLD);
      fs.writeFileSync(path.join(p.lower, name('copied', label)), OLD);
      fs.writeFileSync(path.join(p.lower, name('target', label)), OLD);
      fs.symlinkSync(name('target', label), path.join(p.lower, name('symlink', label)));
    }
    fs.cpSync(p.lower, p.plain, { recursive: true, verbatimSymlinks: true });
    await mountPair(p);
    for (const root of [p.mnt, p.plain]) {
      for (const { label } of matrix) {
        fs.writeFileSync(path.join(root, name('upper', label)), OLD); // created through the mount: lives in the upper
        fs.chmodSync(path.join(root, name('copied', label)), 0o640); // copied up by the chmod, contents unchanged
      }
    }
  });
  after(() => teardown(p));

  for (const kind of kinds) {
    it(`${kind} file: results, sizes and contents equal a plain directory's`, () => {
      const diffs: string[] = [];
      for (const { label, flags } of matrix) {
        const file = name(kind, label);
        const results = [p.plain, p.mnt].map((root) => {
          const r = openAndWrite(path.join(root, file), flags);
          const seen = [describePath(path.join(root, file))];
          if (kind === 'symlink') seen.push(describePath(path.join(root, name('target', label))));
          return `${r}; ${seen.join('; ')}`;
        });
        if (results[0] !== results[1]) diffs.push(`${label}: plain ${results[0]} | mount ${results[1]}`);
      }
      assert.deepEqual(diffs, []);
    });
  }

  it('the lower is never written', () => {
    for (const { label } of matrix) {
      for (const kind of ['lower', 'copied', 'target']) {
        assert.equal(fs.readFileSync(path.join(p.lower, name(kind, label)), 'utf8'), OLD, name(kind, label));
      }
    }
  });

  it('a truncating rewrite through a fresh open shows the new contents only, also after a remount', async () => {
    for (const root of [p.plain, p.mnt]) {
      fs.writeFileSync(path.join(root, 'settings.json'), JSON.stringify({ greeting: 'a very long greeting value that takes space' }));
      fs.writeFileSync(path.join(root, 'settings.json'), JSON.stringify({ greeting: 'hi' }));
    }
    const expected = fs.readFileSync(path.join(p.plain, 'settings.json'), 'utf8');
    assert.equal(fs.readFileSync(path.join(p.mnt, 'settings.json'), 'utf8'), expected);
    await p.mount!.stop();
    await mountPair(p);
    assert.equal(fs.readFileSync(path.join(p.mnt, 'settings.json'), 'utf8'), expected);
  });
});
