# tests/lib/host.sh: what husk's shell scripts share (./run, tests/setup,
# tests/run, kernel-config/build). Source it; it defines functions only.

# husk_ensure_packages WHO PKG...: installs the Debian packages not yet
# installed (apt-get, as root), saying so on stderr prefixed with WHO.
husk_ensure_packages() {
  local who=$1 p missing=()
  shift
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$who: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "$who: run as root (or install these packages yourself): ${missing[*]}" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# husk_kvm_kind: what this host's KVM can do, one word on stdout.
#   hardware  kvm_intel or kvm_amd: Linux guests run here
#   pvm       a PVM /dev/kvm: tiny guests only, Linux guests need the rig
#   unusable  a KVM module but no /dev/kvm this user can open
#   none      no /dev/kvm at all
husk_kvm_kind() {
  local usable=0
  [[ -r /dev/kvm && -w /dev/kvm ]] && usable=1
  if [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]] && ((usable)); then echo hardware
  elif [[ -d /sys/module/kvm_pvm ]] && ((usable)); then echo pvm
  elif [[ -e /dev/kvm ]]; then echo unusable
  else echo none; fi
}

# husk_why_rig KIND: why Linux guests go to the nested rig on this host, as a phrase.
husk_why_rig() {
  case $1 in
    pvm) echo "this host's /dev/kvm is PVM, which cannot boot a stock Linux guest" ;;
    unusable) echo "this host's /dev/kvm cannot be opened by this user" ;;
    *) echo "this host has no /dev/kvm" ;;
  esac
}

# husk_temp_dir VAR PREFIX: makes a temporary directory, stores its path in
# VAR, and removes it when the script exits (whatever the way out).
husk_temp_dir() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/$2.XXXXXX")
  printf -v "$1" '%s' "$dir"
  husk_cleanup_paths+=("$dir")
  trap 'rm -rf -- "${husk_cleanup_paths[@]}"' EXIT
}
husk_cleanup_paths=()

# husk_sanitizer_build DIR [meson options...]: sets DIR up as an ASan + UBSan
# build, or brings an existing one to these options. At -O1 with line tables
# only (-g1): reports keep file:line, and the build takes about a third of
# the time of -O2 -g (the sanitizer tier's build was the longest step of a
# fresh run).
husk_sanitizer_build() {
  local dir=$1 opts
  shift
  opts=(-Db_sanitize=address,undefined -Db_lundef=false -Doptimization=1 -Ddebug=false
        -Dcpp_args=-g1 -Dc_args=-g1 "$@")
  # A build set up with another compiler than CXX names is set up anew
  # (meson keeps a build's compiler).
  if [[ -f $dir/build.ninja && -n ${CXX:-} ]] &&
     ! grep -q "^ command = $CXX " "$dir/build.ninja"; then
    rm -rf "$dir"
  fi
  if [[ -f $dir/build.ninja ]]; then
    meson configure "$dir" "${opts[@]}" >/dev/null
  else
    meson setup "$dir" "$root" "${opts[@]}" >/dev/null
  fi
}
