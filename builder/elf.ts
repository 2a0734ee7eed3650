/**
 * Just enough of the ELF format to check what a binary is built for, before running it or
 * shipping it: the identification (magic, class, byte order), the machine, and the glibc
 * symbol versions it needs (from `.gnu.version_r`, the table the dynamic loader checks at
 * start: a `GLIBC_2.34` there fails on an older glibc with "version `GLIBC_2.34' not found").
 * Positioned reads only: a Node binary is 150 MB and its headers a few KiB.
 */
import fs from 'node:fs';
import { OverpackError } from '../runtime/errors/overpack-error.js';

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const SHT_GNU_VERNEED = 0x6ffffffe;
/** e_machine values of the architectures we ship; others are reported by number. */
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

export class ElfError extends OverpackError {
  constructor(readonly file: string, message: string) {
    super('ELF', 'read-elf', file, `${file}: ${message}`);
  }
}

export interface ElfIdent {
  bits: 32 | 64;
  littleEndian: boolean;
  /** e_machine: 62 x86-64, 183 AArch64, ... */
  machine: number;
}

/** Reads exactly `length` bytes at `position`, or fails naming the file as truncated. */
function readAt(fd: number, file: string, position: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, b, got, length - got, position + got);
    if (n === 0) throw new ElfError(file, `truncated ELF file (wanted ${length} bytes at offset ${position})`);
    got += n;
  }
  return b;
}

/** Byte-order-aware field readers for one file. */
class Fields {
  constructor(private readonly b: Buffer, private readonly le: boolean, private readonly bits: 32 | 64) {}
  u16(o: number): number {
    return this.le ? this.b.readUInt16LE(o) : this.b.readUInt16BE(o);
  }
  u32(o: number): number {
    return this.le ? this.b.readUInt32LE(o) : this.b.readUInt32BE(o);
  }
  /** An address-sized field (Elf32_Off or Elf64_Off). */
  addr(o: number): number {
    if (this.bits === 32) return this.u32(o);
    return Number(this.le ? this.b.readBigUInt64LE(o) : this.b.readBigUInt64BE(o));
  }
}

function identify(fd: number, file: string): { ident: ElfIdent; header: Buffer } {
  const size = fs.fstatSync(fd).size;
  if (size < 64) throw new ElfError(file, 'not an ELF executable (too small)');
  const header = readAt(fd, file, 0, 64);
  if (!header.subarray(0, 4).equals(ELF_MAGIC)) throw new ElfError(file, 'not an ELF executable (no ELF magic; is it a script or a file for another system?)');
  const cls = header[4];
  const data = header[5];
  if (cls !== 1 && cls !== 2) throw new ElfError(file, `unknown ELF class ${cls}`);
  if (data !== 1 && data !== 2) throw new ElfError(file, `unknown ELF byte order ${data}`);
  const ident: ElfIdent = { bits: cls === 1 ? 32 : 64, littleEndian: data === 1, machine: 0 };
  ident.machine = new Fields(header, ident.littleEndian, ident.bits).u16(18);
  return { ident, header };
}

function withFile<T>(file: string, work: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new ElfError(file, `cannot open: ${(err as Error).message}`);
  }
  try {
    return work(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function elfIdent(file: string): ElfIdent {
  return withFile(file, (fd) => identify(fd, file).ident);
}

/** The ELF e_machine of `file` (EM_X86_64, EM_AARCH64, ...). */
export function elfMachine(file: string): number {
  return elfIdent(file).machine;
}

/** The symbol versions `file` needs from its libraries (`.gnu.version_r`), e.g. GLIBC_2.28. */
export function versionsNeeded(file: string): Array<{ library: string; version: string }> {
  return withFile(file, (fd) => {
    const { ident, header } = identify(fd, file);
    const h = new Fields(header, ident.littleEndian, ident.bits);
    const wide = ident.bits === 64;
    const shoff = h.addr(wide ? 0x28 : 0x20);
    const shentsize = h.u16(wide ? 0x3a : 0x2e);
    const shnum = h.u16(wide ? 0x3c : 0x30);
    if (shoff === 0 || shnum === 0) return [];
    if (shentsize < (wide ? 64 : 40)) throw new ElfError(file, `bad section header size ${shentsize}`);
    const table = readAt(fd, file, shoff, shentsize * shnum);
    const t = new Fields(table, ident.littleEndian, ident.bits);
    const section = (i: number) => {
      const o = i * shentsize;
      return wide
        ? { type: t.u32(o + 4), offset: t.addr(o + 0x18), size: t.addr(o + 0x20), link: t.u32(o + 0x28), info: t.u32(o + 0x2c) }
        : { type: t.u32(o + 4), offset: t.u32(o + 0x10), size: t.u32(o + 0x14), link: t.u32(o + 0x18), info: t.u32(o + 0x1c) };
    };
    const out: Array<{ library: string; version: string }> = [];
    for (let i = 0; i < shnum; i++) {
      const s = section(i);
      if (s.type !== SHT_GNU_VERNEED) continue;
      if (s.link >= shnum) throw new ElfError(file, '.gnu.version_r links to a missing string table');
      const strs = section(s.link);
      const strtab = readAt(fd, file, strs.offset, strs.size);
      const name = (o: number) => {
        const end = strtab.indexOf(0, o);
        if (o >= strtab.length || end < 0) throw new ElfError(file, 'a version name lies outside its string table');
        return strtab.toString('latin1', o, end);
      };
      const data = readAt(fd, file, s.offset, s.size);
      const v = new Fields(data, ident.littleEndian, ident.bits);
      // Elf_Verneed { u16 version, u16 cnt, u32 file, u32 aux, u32 next } (sh_info entries)
      // Elf_Vernaux { u32 hash, u16 flags, u16 other, u32 name, u32 next }, 16 bytes each
      for (let n = 0, at = 0; n < s.info; n++) {
        if (at + 16 > data.length) throw new ElfError(file, '.gnu.version_r is truncated');
        const library = name(v.u32(at + 4));
        for (let k = 0, aux = at + v.u32(at + 8); k < v.u16(at + 2); k++) {
          if (aux + 16 > data.length) throw new ElfError(file, '.gnu.version_r is truncated');
          out.push({ library, version: name(v.u32(aux + 8)) });
          const next = v.u32(aux + 12);
          if (next === 0) break;
          aux += next;
        }
        const next = v.u32(at + 12);
        if (next === 0) break;
        at += next;
      }
    }
    return out;
  });
}

/** The GLIBC_x.y versions `file` needs, sorted oldest first, without duplicates. */
export function glibcVersionsNeeded(file: string): string[] {
  const versions = new Set(versionsNeeded(file).map((v) => v.version).filter((v) => /^GLIBC_\d+(\.\d+)*$/.test(v)));
  return [...versions].sort(compareGlibc);
}

export function compareGlibc(a: string, b: string): number {
  const pa = a.replace(/^GLIBC_/, '').split('.').map(Number);
  const pb = b.replace(/^GLIBC_/, '').split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The newest glibc version needed by any of `files` ("2.34"), or null if none needs glibc. */
export function glibcFloor(files: string[]): string | null {
  const all = files.flatMap(glibcVersionsNeeded).sort(compareGlibc);
  const top = all[all.length - 1];
  return top ? top.replace(/^GLIBC_/, '') : null;
}

export function machineName(machine: number): string {
  if (machine === EM_X86_64) return 'x86-64';
  if (machine === EM_AARCH64) return 'AArch64';
  return `ELF machine ${machine}`;
}
