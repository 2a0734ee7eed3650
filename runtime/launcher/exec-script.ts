/**
 * How a non-JS entrypoint is started: `/bin/sh -c EXEC_SCRIPT <entrypoint> <args...>`. The
 * program Node's spawn execs must live outside the mount (spawn blocks our event loop until the
 * exec, and an exec inside the mount needs that loop to answer), so a shell outside it execs
 * the entrypoint. Before that it reads the entrypoint's `#!` line: a missing interpreter is
 * named as such (exit 127), instead of the shell's "<script>: not found", which blames the
 * script. Plain builtins only: it costs a fraction of a millisecond.
 */
export const EXEC_SCRIPT = [
  'need() {',
  '  p=$1; shift',
  '  if [ "${p##*/}" = env ]; then',
  '    for w; do case $w in -*|*=*) ;; *) command -v "$w" >/dev/null 2>&1 && return 0; p=$w; break;; esac; done',
  '    [ "${p##*/}" = env ] && return 0',
  '  elif [ -e "$p" ]; then return 0; fi',
  '  echo "overpack: error: cannot start $E: its interpreter $p is not installed on this machine (#!$L); install $p, then run it again" >&2',
  '  exit 127',
  '}',
  'if IFS= read -r L < "$0" 2>/dev/null; then',
  '  case $L in "#!"*) E=$0; L=${L#??}; set -f; need $L; set +f;; esac',
  'fi',
  'exec "$0" "$@"',
].join('\n');
