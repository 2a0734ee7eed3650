/**
 * Electron and Chromium apps sandbox their renderers with a setuid helper (`chrome-sandbox`)
 * or, without one, with unprivileged user namespaces. A FUSE mount is `nosuid`: inside a bundle
 * the helper can never be setuid, so such an app needs user namespaces. Where the system blocks
 * them, the app would abort with a cryptic message (or a user would be told to turn the sandbox
 * off): the runtime says what is wrong and what to do instead, and never turns the sandbox off.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Where Electron and Chromium builds keep their helper, relative to the app. */
export function sandboxHelperCandidates(entrypoint: string): string[] {
  const dir = path.posix.dirname(`/${entrypoint}`);
  return [...new Set([path.posix.join(dir, 'chrome-sandbox'), '/chrome-sandbox', '/node_modules/electron/dist/chrome-sandbox'])];
}

function sysctl(name: string): string | null {
  try {
    return fs.readFileSync(path.join('/proc/sys', name), 'utf8').trim();
  } catch {
    return null;
  }
}

/** Why this process cannot create a user namespace, or null when it can (as far as the knobs tell). */
export function userNamespacesBlocked(): string | null {
  if (sysctl('user/max_user_namespaces') === '0') return 'user.max_user_namespaces is 0';
  if (process.getuid?.() === 0) return null;
  if (sysctl('kernel/unprivileged_userns_clone') === '0') return 'kernel.unprivileged_userns_clone is 0';
  if (sysctl('kernel/apparmor_restrict_unprivileged_userns') === '1') return 'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns is 1, as on Ubuntu 24.04)';
  return null;
}

/** The message for an app whose sandbox cannot work here; null when it can. */
export function sandboxProblem(helper: string): string | null {
  const blocked = userNamespacesBlocked();
  if (!blocked) return null;
  return (
    `this app is an Electron/Chromium app (${helper} in the bundle) and needs a sandbox: its setuid chrome-sandbox cannot work inside a bundle (the app's mount is nosuid), ` +
    `and this system blocks unprivileged user namespaces (${blocked}). Allow them for your user (sysctl, or an AppArmor profile for this app on Ubuntu), ` +
    'or start the app with --no-sandbox if you accept running it without a sandbox; overpack does not turn it off for you'
  );
}
