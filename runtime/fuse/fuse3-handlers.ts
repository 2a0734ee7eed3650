/**
 * The fuse3 binding's answer to each request (FORGET and EXIT are the server's): the node ids
 * and arguments the addon passes (fuse3-wire.ts) turned into the engine's calls by path, and
 * the reply. SETATTR and READDIR have modules of their own.
 */
import { constants as osc } from 'node:os';
import type { Req } from '../native/addon.js';
import type { Attr } from '../vfs/index.js';
import { childOf, S_IFDIR, S_IFMT } from '../vfs/index.js';
import type { Fuse3Context } from './fuse3-context.js';
import { checkType, following, isUnlinked, node, pathOf, stable } from './fuse3-paths.js';
import { readdir } from './fuse3-readdir.js';
import { setattr } from './fuse3-setattr.js';
import { fhFor, keepIfKnown, unlinkedAttr } from './fuse3-unlinked.js';
import { bytes, f64s, num, OP, packAttr, PASSTHROUGH_ON, RENAME_EXCHANGE, RENAME_NOREPLACE, str, type Wire } from './fuse3-wire.js';

const { ENOENT, EEXIST, EINVAL, ENODATA, ENOSYS } = osc.errno;
const CAPS_XATTR = 'security.capability';
const EMPTY = Buffer.alloc(0);

/** Each case answers its request as its last step; a throw before that becomes an errno (the server's). */
export async function handle(c: Fuse3Context, op: number, req: Req, a: Wire): Promise<void> {
  const f = c.fuse;
  const ops = c.ops;
  switch (op) {
    case OP.LOOKUP: {
      const parent = node(c, num(a, 0));
      const name = str(a, 1);
      let attr: Attr;
      try {
        attr = await stable(c, parent, (p) => ops.getattr(childOf(p, name)));
      } catch (err) {
        if ((err as { errno?: number }).errno !== ENOENT) throw err;
        // A cached miss: the kernel will not ask again for negative_timeout seconds.
        f.replyEntry(req, 0, c.scratch, c.negT, 0);
        // Lookups in a directory that is not lent yet: its next ones may be answered by the
        // addon (lent after the reply, not before: this one is answered already).
        void c.lending?.offer(parent);
        return;
      }
      if ((attr.mode & S_IFMT) !== S_IFDIR || c.lending === null) {
        c.replyNewEntry(req, parent, name, attr);
        void c.lending?.offer(parent);
        return;
      }
      // A directory is lent to the addon before the caller hears of it: its next lookups are
      // most likely in it (fuse3-lending.ts).
      const n = c.nodes.lookUp(parent, name, S_IFDIR);
      await c.lending.offer(n);
      c.replyEntryOf(req, n, attr);
      void c.lending.offer(parent);
      return;
    }
    case OP.GETATTR: {
      const n = node(c, num(a, 0));
      const fh = num(a, 1);
      const attr = await stable(c, n, (p) =>
        fh > 0 ? ops.fgetattr(p, fh) : isUnlinked(n) ? unlinkedAttr(c, n, p) : fh === 0 ? ops.fgetattr(p, 0) : ops.getattr(p),
      );
      checkType(c, n, attr);
      c.replyAttr(req, attr);
      return;
    }
    case OP.SETATTR:
      return setattr(c, req, num(a, 0), num(a, 1), f64s(a, 2), num(a, 3) < 0 ? -1 : fhFor(node(c, num(a, 0)), num(a, 3)));
    case OP.READLINK:
      f.replyReadlink(req, await ops.readlink(pathOf(c, num(a, 0))));
      return;
    case OP.MKNOD:
    case OP.MKDIR:
    case OP.SYMLINK: {
      const parent = node(c, num(a, 0));
      const name = str(a, 1);
      const p = childOf(parent.path(c.nodes.generation), name);
      if (op === OP.MKNOD) await ops.mknod(p, num(a, 2), num(a, 3));
      else if (op === OP.MKDIR) await ops.mkdir(p, num(a, 2));
      else await ops.symlink(str(a, 2), p);
      c.replyNewEntry(req, parent, name, await ops.getattr(p));
      return;
    }
    case OP.UNLINK:
    case OP.RMDIR: {
      const parent = node(c, num(a, 0));
      const name = str(a, 1);
      const p = childOf(parent.path(c.nodes.generation), name);
      await keepIfKnown(c, parent, name, p);
      if (op === OP.UNLINK) await ops.unlink(p);
      else await ops.rmdir(p);
      c.nodes.detach(parent, name);
      f.replyErr(req, 0);
      return;
    }
    case OP.RENAME: {
      const parent = node(c, num(a, 0));
      const name = str(a, 1);
      const newParent = node(c, num(a, 2));
      const newName = str(a, 3);
      const flags = num(a, 4);
      const from = childOf(parent.path(c.nodes.generation), name);
      const to = childOf(newParent.path(c.nodes.generation), newName);
      if (flags & RENAME_EXCHANGE) {
        f.replyErr(req, EINVAL);
        return;
      }
      if (flags & RENAME_NOREPLACE) {
        const exists = await ops.getattr(to).then(() => true, () => false);
        if (exists) {
          f.replyErr(req, EEXIST);
          return;
        }
      }
      await keepIfKnown(c, newParent, newName, to);
      await ops.rename(from, to);
      c.nodes.move(parent, name, newParent, newName);
      f.replyErr(req, 0);
      return;
    }
    case OP.LINK: {
      const existing = pathOf(c, num(a, 0));
      const newParent = node(c, num(a, 1));
      const newName = str(a, 2);
      const p = childOf(newParent.path(c.nodes.generation), newName);
      await ops.link(existing, p);
      // The existing name is its own kernel node: its cached link count (and, after a
      // copy-up, its whole attributes) are stale now.
      c.invalInode(num(a, 0));
      c.replyNewEntry(req, newParent, newName, await ops.getattr(p));
      return;
    }
    case OP.OPEN:
      if (num(a, 2) === PASSTHROUGH_ON) {
        // Under passthrough the addon sends only an open for writing that may be passed
        // through: the file is copied up here and the kernel reads and writes its upper copy.
        const n = node(c, num(a, 0));
        const p = n.path(c.nodes.generation);
        // A file that lost its name (reopened through /proc/self/fd, or unlinked while the
        // open was on its way) has no path to copy up: its kept handle, or a cached open.
        const fd = isUnlinked(n) ? (n.keptFh ? (ops.directDescriptor!(p, n.keptFh)?.fd ?? -1) : -1) : await ops.passthroughDescriptor!(p);
        f.replyOpen(req, n.id, fd);
        return;
      }
      // ENOSYS once, and the kernel stops sending OPEN and RELEASE (zero-message open): every
      // file is then open with keep_cache, and reads and writes arrive with file handle 0,
      // which the engine serves by path from its own cache of descriptors. Upper hard links
      // stay coherent because their attributes are never cached (the kernel's automatic
      // invalidation drops their pages when a read sees a new mtime). Unlinked files that are
      // still open keep working through keepIfKnown.
      f.replyErr(req, ENOSYS);
      return;
    case OP.CREATE: {
      const parent = node(c, num(a, 0));
      const name = str(a, 1);
      const p = childOf(parent.path(c.nodes.generation), name);
      // The file is made (with the caller's mode and flags) and our handle closed once the
      // kernel has the reply: its own opens use the file by path with handle 0 like every
      // other (under passthrough, the kernel reads and writes the new upper file itself).
      const fh = await ops.create(p, num(a, 2), num(a, 3));
      try {
        const attr = await ops.getattr(p);
        const n = c.nodes.lookUp(parent, name, attr.mode & S_IFMT);
        packAttr(attr, c.scratch);
        const backing = c.passthrough ? (ops.directDescriptor!(p, fh)?.fd ?? -1) : -1;
        if (f.replyCreate(req, n.id, c.scratch, c.entryT, c.attrTimeout(attr), 0, 0, backing) !== 0) c.nodes.forget(n.id, 1);
      } finally {
        await ops.release(p, fh);
      }
      return;
    }
    case OP.READ: {
      const size = num(a, 1);
      const n = node(c, num(a, 0));
      const path = n.path(c.nodes.generation);
      const fh = fhFor(n, num(a, 3));
      // A file on disk is answered from its descriptor in C (spliced, see replyFd): the data
      // never enters JS. Nothing may run between getting the descriptor and replying.
      const offset = num(a, 2);
      const span = ops.readFd ? await ops.readFd(path, fh, offset, size) : null;
      if (span !== null) {
        // A span inside a bigger file (an image) ends where the file does, not at its EOF.
        const count = span.size === null ? size : Math.max(0, Math.min(size, span.size - offset));
        if (count === 0) f.replyBuf(req, EMPTY, 0);
        else f.replyFd(req, span.fd, count, span.base + offset);
        if (span.size === null && span.base === 0) c.offerDirect(n, path, num(a, 3), fh);
        return;
      }
      const buf = c.takeReadBuffer(size);
      try {
        const count = await ops.read(path, fh, buf, size, offset);
        f.replyBuf(req, buf, count);
      } finally {
        c.giveReadBuffer(buf);
      }
      return;
    }
    case OP.WRITE: {
      const data = bytes(a, 1);
      const n = node(c, num(a, 0));
      const fh = fhFor(n, num(a, 3));
      f.replyWrite(req, await following(c, n, (p) => ops.write(p, fh, data, data.length, num(a, 2))));
      c.offerDirect(n, n.path(c.nodes.generation), num(a, 3), fh);
      return;
    }
    case OP.RELEASE:
      // Only if the kernel ever sends one (zero-message opens make it stop).
      await ops.release(node(c, num(a, 0)).path(c.nodes.generation), num(a, 1));
      f.replyErr(req, 0);
      return;
    case OP.FSYNC: {
      const n = node(c, num(a, 0));
      await ops.fsync(n.path(c.nodes.generation), fhFor(n, num(a, 2)), num(a, 1) !== 0);
      f.replyErr(req, 0);
      return;
    }
    case OP.READDIR:
    case OP.READDIRPLUS:
      return readdir(c, req, num(a, 0), num(a, 1), num(a, 2), op === OP.READDIRPLUS);
    case OP.STATFS: {
      const s = await ops.statfs(pathOf(c, num(a, 0)));
      const v = new Float64Array([s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.fsid, s.flag, s.namemax]);
      f.replyStatfs(req, v);
      return;
    }
    case OP.SETXATTR:
      await ops.setxattr(pathOf(c, num(a, 0)), str(a, 1), bytes(a, 2), num(a, 3));
      f.replyErr(req, 0);
      return;
    case OP.GETXATTR: {
      const name = str(a, 1);
      let value: Buffer;
      try {
        value = await ops.getxattr(pathOf(c, num(a, 0)), name);
      } catch (err) {
        // Asked before every write: remember "none" so the addon answers the next ones itself.
        if (name === CAPS_XATTR && (err as { errno?: number }).errno === ENODATA) c.noCapability(num(a, 0));
        throw err;
      }
      return c.replySized(req, value, num(a, 2));
    }
    case OP.LISTXATTR: {
      const names = await ops.listxattr(pathOf(c, num(a, 0)));
      return c.replySized(req, Buffer.from(names.map((x) => `${x}\0`).join(''), 'utf8'), num(a, 1));
    }
    case OP.REMOVEXATTR:
      await ops.removexattr(pathOf(c, num(a, 0)), str(a, 1));
      f.replyErr(req, 0);
      return;
    case OP.FALLOCATE: {
      const n = node(c, num(a, 0));
      await ops.fallocate(n.path(c.nodes.generation), fhFor(n, num(a, 4)), num(a, 1), num(a, 2), num(a, 3));
      f.replyErr(req, 0);
      return;
    }
    case OP.LSEEK: {
      const n = node(c, num(a, 0));
      f.replyLseek(req, await ops.lseek(n.path(c.nodes.generation), fhFor(n, num(a, 3)), num(a, 1), num(a, 2)));
      return;
    }
    default:
      f.replyErr(req, ENOSYS);
  }
}
