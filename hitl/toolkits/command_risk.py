"""How risky a command line is: read-only programs are allowed by name, the rest fail closed.

A program scores low only when it is on the read-only list below, is the one the worker
would run (found on PATH, outside the workspace), uses only options known to be
harmless, and names only paths inside the workspace. Anything else scores high:

- 30: a read-only program with harmless options, reading inside the workspace;
- 80: a path outside the workspace (absolute, `..`, `~`, a symlink out) or one that
  could not be checked; an option that follows symlinks wherever they lead, or that
  reads the names of files to read from a file;
- 85: any program not on the read-only list; an option not known to be harmless;
- 90: a path under /proc, /sys or /dev; an option or operand that writes a file
  (`sort -o`, `uniq IN OUT`); a program that writes files (`cp`, `mv`, `tee`, ...);
- 95: shells, wrappers, interpreters given code, destructive and network programs,
  programs that run code from their options or the workspace's configuration (`git`,
  `tar`, `make`, `vim`, `gdb`, `less`, ...), `find -exec` / `-delete`,
  `sort --compress-program`;
- 100: privilege (`sudo`, `doas`, ...).

The analysis is in two halves: `path_words` says which arguments name files, the preview
resolves them (`place_of`) and records what it found in its facts, and `assess` reads
those facts. Both run in the `check_tool` activity, the risk after the preview, so the
score rests on the facts the reviewer is shown. Without them (a failed preview) every
relative path counts as unchecked.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hitl.text import quoted

READ_ONLY_RISK = 30
READS_OUTSIDE_RISK = 80
UNKNOWN_RISK = 85
WRITES_RISK = 90
SYSTEM_FILES_RISK = 90
RUNS_ANYTHING_RISK = 95
PRIVILEGED_RISK = 100

# Where a path argument leads, as the preview found it (facts["paths"], in order).
INSIDE = "inside"
OUTSIDE = "outside"
LINK_OUT = "link"
SYSTEM = "system"
UNCHECKED = "unchecked"

_SYSTEM_ROOTS = ("/proc", "/sys", "/dev")
_SHOWN_CHARS = 120


@dataclass(frozen=True)
class Finding:
    """One reason a command scores what it scores."""

    risk: int
    why: str


def _q(word: str) -> str:
    text = quoted(word)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


# --- programs that are dangerous whatever their arguments --------------------------------

# Programs are matched by basename, lower case, version suffix stripped (python3.11,
# perl5.36, lua5.4 -> python, perl, lua; mkfs.ext4 -> mkfs), so a path or a version
# can't make a dangerous program look harmless. (The read-only list below is matched
# exactly instead, so a name can't make an unknown program look read-only.)
_PRIVILEGED = frozenset({"sudo", "doas", "su", "pkexec", "runuser", "setpriv"})

_SHELLS = frozenset(
    {"sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "yash", "fish",
     "csh", "tcsh", "busybox", "toybox"}
)  # fmt: skip

# Each runs the command that follows it, so it runs anything a shell could.
_WRAPPERS = frozenset(
    {"env", "xargs", "nohup", "timeout", "nice", "ionice", "stdbuf", "setsid", "chrt",
     "taskset", "time", "flock", "chroot", "unshare", "nsenter", "script", "watch",
     "parallel", "strace", "ltrace", "systemd-run", "firejail", "bwrap"}
)  # fmt: skip

_DESTRUCTIVE = frozenset(
    {"rm", "dd", "mkfs", "shred", "truncate", "curl", "wget", "chmod", "chown", "kill",
     "pkill", "killall", "ssh", "scp", "rsync", "nc", "ncat", "socat"}
)  # fmt: skip

# With inline code or a script they run anything; sed's `e` command runs a shell.
_INTERPRETERS = frozenset(
    {"python", "pypy", "perl", "ruby", "irb", "node", "nodejs", "deno", "bun", "php",
     "lua", "luajit", "awk", "gawk", "mawk", "nawk", "sed", "osascript", "pwsh",
     "powershell", "tclsh", "wish", "expect", "rscript", "julia", "groovy", "jshell"}
)  # fmt: skip

_ONLY_ASKS_VERSION = frozenset({"--version", "-V", "-v", "-version", "--help", "-h", "-help"})

# Programs that run code through their own options or the workspace's configuration,
# whatever the command line looks like.
_RUNS_CODE_GROUPS = (
    (
        "git hg svn bzr fossil",
        "version control runs hooks, aliases and programs named in the workspace's own "
        "configuration (core.fsmonitor, core.pager, alias.x=!sh), even for a status",
    ),
    (
        "make gmake cmake ninja meson just rake gradle mvn ant npm npx yarn pnpm cargo go "
        "pip pip3 poetry uv tox nox bazel scons",
        "build tools and package managers run the workspace's build scripts",
    ),
    (
        "tar bsdtar cpio pax zip unzip 7z 7za ar",
        "archivers run programs (tar --to-command, --checkpoint-action=exec, "
        "--use-compress-program) and write files anywhere",
    ),
    (
        "vim vi nvim view vimdiff ex ed emacs nano pico joe mcedit",
        "editors run commands (vim -c '!sh') and write files",
    ),
    ("gdb lldb", "debuggers run commands (gdb -ex) and programs"),
    ("less more most pg man", "pagers run input preprocessors (LESSOPEN) and commands"),
    ("patch", "patch runs ed for ed-style diffs and writes files anywhere"),
)
_RUNS_CODE = {name: why for names, why in _RUNS_CODE_GROUPS for name in names.split()}

_WRITES_FILES = frozenset(
    {"cp", "mv", "ln", "tee", "install", "unlink", "rmdir", "touch", "mkdir", "split",
     "csplit", "mkfifo", "mknod"}
)  # fmt: skip

_VERSION_SUFFIX = re.compile(r"[-_.]?\d+(?:\.\d+)*[a-z]?$")


def program_basename(word: str) -> str:
    return word.replace("\\", "/").rsplit("/", 1)[-1].strip().lower().removesuffix(".exe")


def program_name(word: str) -> str:
    """The program a word names: basename, lower case, version suffix stripped."""
    return _VERSION_SUFFIX.sub("", program_basename(word))


def program_names(word: str) -> set[str]:
    name = program_basename(word)
    names = {name, _VERSION_SUFFIX.sub("", name), name.split(".", 1)[0]}
    if name.startswith(("python", "pypy")):
        names.add("python")
    return names


def program_finding(word: str, rest: Sequence[str]) -> Finding | None:
    """Why `word`, run as a program with `rest`, is dangerous whatever it is given."""
    names = program_names(word)
    shown = _q(word)
    if names & _PRIVILEGED:
        return Finding(PRIVILEGED_RISK, f"{shown} runs a command with other privileges")
    if names & _SHELLS:
        return Finding(RUNS_ANYTHING_RISK, f"{shown} is a shell: it runs any command")
    if names & _WRAPPERS:
        return Finding(RUNS_ANYTHING_RISK, f"{shown} runs the command that follows it")
    if names & _DESTRUCTIVE:
        return Finding(
            RUNS_ANYTHING_RISK,
            f"{shown} can destroy data, change permissions, stop processes or reach the network",
        )
    if names & _INTERPRETERS and any(arg not in _ONLY_ASKS_VERSION for arg in rest):
        return Finding(RUNS_ANYTHING_RISK, f"{shown} runs the code or script it is given")
    for name in sorted(names):
        if name in _RUNS_CODE:
            return Finding(RUNS_ANYTHING_RISK, f"{shown}: {_RUNS_CODE[name]}")
    if names & _WRITES_FILES:
        return Finding(
            WRITES_RISK, f"{shown} writes files: it can empty or replace any the worker can"
        )
    return None


# --- the read-only programs ---------------------------------------------------------------

# What an option does, beyond reading the files it is given.
SAFE = "safe"
FOLLOWS = "follows"  # follows symlinks wherever they lead (recursing), so reads outside
INDIRECT = "indirect"  # reads the names of the files to read from a file
WRITES = "writes"
SETS_CLOCK = "clock"
RUNS = "runs"

_KIND_RISK = {
    SAFE: READ_ONLY_RISK,
    FOLLOWS: READS_OUTSIDE_RISK,
    INDIRECT: READS_OUTSIDE_RISK,
    WRITES: WRITES_RISK,
    SETS_CLOCK: WRITES_RISK,
    RUNS: RUNS_ANYTHING_RISK,
}
_KIND_WHY = {
    FOLLOWS: "follows symbolic links wherever they lead, also out of the workspace",
    INDIRECT: "reads the names of the files to read from a file, which the preview can't check",
    WRITES: "writes a file",
    SETS_CLOCK: "sets the system clock",
    RUNS: "runs another program",
}

# Whether an option takes a value, and whether the value names a file.
NO_VALUE = "none"
DATA = "data"  # a pattern, number, format, separator: never opened
PATH = "path"  # a file or folder: checked like a path operand
OPTIONAL = "optional"  # only attached (`--color=always`, `-w8`), never the next word


@dataclass(frozen=True)
class Option:
    value: str = NO_VALUE
    kind: str = SAFE


@dataclass(frozen=True)
class ReadOnlyProgram:
    """A program that only reads, and how its command line names files.

    `options` maps an option's name without dashes (one character: a short option) to
    what it takes and does; an option that is not listed is not known to be harmless.
    """

    options: Mapping[str, Option] = field(default_factory=dict)
    operands: str = "paths"  # "paths" (files it reads), "text" (never opened)
    parse: bool = True  # False: every argument is text (echo, printf, true)
    pattern_first: bool = False  # grep: the first operand is the pattern, unless -e/-f
    writes_operand: int | None = None  # uniq, xxd: operand number N (0-based) is written
    sets_clock: bool = False  # date: an operand not starting with + sets the clock
    whole_word_options: bool = False  # xxd: `-cols 8`, no bundling of short options
    response_files: bool = False  # strings: `@FILE` reads more arguments from FILE
    unfollow: frozenset[str] = frozenset()  # options that turn FOLLOWS off (diff)


def _options(spec: str, kind: str = SAFE) -> dict[str, Option]:
    """`"a b color?= ignore= exclude-from=@"`: a flag, `=` takes a value, `=@` a path,
    `?=` an optional attached value."""
    found: dict[str, Option] = {}
    for token in spec.split():
        if token.endswith("?="):
            found[token[:-2]] = Option(OPTIONAL, kind)
        elif token.endswith("=@"):
            found[token[:-2]] = Option(PATH, kind)
        elif token.endswith("="):
            found[token[:-1]] = Option(DATA, kind)
        else:
            found[token] = Option(NO_VALUE, kind)
    return found


def _program(
    flags: str = "",
    data: str = "",
    paths: str = "",
    long: str = "",
    *,
    follows: str = "",
    indirect: str = "",
    writes: str = "",
    clock: str = "",
    runs: str = "",
    **settings: Any,
) -> ReadOnlyProgram:
    options = {char: Option(NO_VALUE) for char in flags}
    options.update({char: Option(DATA) for char in data})
    options.update({char: Option(PATH) for char in paths})
    options.update(_options("help version " + long))
    for spec, kind in (
        (follows, FOLLOWS),
        (indirect, INDIRECT),
        (writes, WRITES),
        (clock, SETS_CLOCK),
        (runs, RUNS),
    ):
        options.update(_options(spec, kind))
    return ReadOnlyProgram(options=options, **settings)


_DIGITS = "0123456789"
_SUMS = _program(
    "btzw",
    long="binary tag text zero ignore-missing quiet status strict warn",
    indirect="c check",
)
_GREP = _program(
    "EFGPiywxzsvVbnHhoqaIrLlcTZU" + _DIGITS,
    "mdDABC" + "e",
    "f",
    "extended-regexp fixed-strings basic-regexp perl-regexp regexp= file=@ ignore-case "
    "no-ignore-case word-regexp line-regexp null-data no-messages invert-match max-count= "
    "byte-offset line-number line-buffered with-filename no-filename label= only-matching "
    "quiet silent binary-files= text directories= devices= recursive include= exclude= "
    "exclude-from=@ exclude-dir= files-without-match files-with-matches count initial-tab "
    "null before-context= after-context= context= group-separator= no-group-separator "
    "color?= colour?= binary",
    follows="R dereference-recursive",
    pattern_first=True,
)

READ_ONLY: dict[str, ReadOnlyProgram] = {
    "ls": _program(
        "aAbBcCdDfFgGhHiklmnNopqQrRsStuUvxXZ1",
        "ITw",
        long="all almost-all author escape block-size= ignore-backups color?= colour?= "
        "directory dired classify?= file-type format= full-time group-directories-first "
        "no-group human-readable si dereference-command-line "
        "dereference-command-line-symlink-to-dir hide= hyperlink?= indicator-style= inode "
        "ignore= kibibytes literal numeric-uid-gid hide-control-chars show-control-chars "
        "quote-name quoting-style= reverse recursive size sort= time= time-style= tabsize= "
        "width= context zero",
        follows="L dereference",
    ),
    "cat": _program(
        "AbeEnstTuv",
        long="show-all number-nonblank show-ends number squeeze-blank show-tabs show-nonprinting",
    ),
    "head": _program(
        "qvz" + _DIGITS, "cn", long="bytes= lines= quiet silent verbose zero-terminated"
    ),
    "tail": _program(
        "fFqvz" + _DIGITS,
        "cns",
        long="bytes= lines= follow?= max-unchanged-stats= pid= quiet silent retry "
        "sleep-interval= verbose zero-terminated",
    ),
    "wc": _program(
        "cmlLw", long="bytes chars lines max-line-length words", indirect="files0-from=@"
    ),
    "stat": _program("Lft", "c", long="dereference file-system cached= format= printf= terse"),
    "du": _program(
        "0abcDHhklmPSsx",
        "Bdt",
        "X",
        "null all apparent-size block-size= bytes total dereference-args max-depth= "
        "human-readable inodes count-links no-dereference separate-dirs si summarize "
        "threshold= time?= time-style= exclude-from=@ exclude= one-file-system",
        follows="L dereference",
        indirect="files0-from=@",
    ),
    "df": _program(
        "ahHiklPTv",
        "Btx",
        long="all block-size= human-readable si inodes local no-sync output?= portability "
        "sync total type= print-type exclude-type=",
    ),
    "pwd": _program("LP", long="logical physical", operands="text"),
    "echo": _program(parse=False, operands="text"),
    "printf": _program(parse=False, operands="text"),
    "true": _program(parse=False, operands="text"),
    "false": _program(parse=False, operands="text"),
    "date": _program(
        "Ru",
        "d",
        "fr",
        "date= debug file=@ iso-8601?= I?= resolution rfc-email rfc-3339= reference=@ utc "
        "universal",
        clock="s= set=",
        sets_clock=True,
        operands="text",
    ),
    "whoami": _program(operands="text"),
    "id": _program("aZgGnruz", long="context group groups name real user zero", operands="text"),
    "uname": _program(
        "asnrvmpio",
        long="all kernel-name nodename kernel-release kernel-version machine processor "
        "hardware-platform operating-system",
        operands="text",
    ),
    "basename": _program("az", "s", long="multiple suffix= zero", operands="text"),
    "dirname": _program("z", long="zero", operands="text"),
    "realpath": _program(
        "emLPqsz",
        long="canonicalize-existing canonicalize-missing logical physical quiet strip "
        "no-symlinks zero relative-to=@ relative-base=@",
    ),
    "readlink": _program(
        "femnqsvz",
        long="canonicalize canonicalize-existing canonicalize-missing no-newline quiet "
        "silent verbose zero",
    ),
    "md5sum": _SUMS,
    "sha1sum": _SUMS,
    "sha224sum": _SUMS,
    "sha256sum": _SUMS,
    "sha384sum": _SUMS,
    "sha512sum": _SUMS,
    "b2sum": _program(
        "btzw",
        "l",
        long="binary tag text zero ignore-missing quiet status strict warn length=",
        indirect="c check",
    ),
    "cksum": _program(
        "zw",
        "al",
        long="algorithm= length= tag untagged zero ignore-missing quiet status strict warn "
        "debug base64 raw",
        indirect="c check",
    ),
    "diff": _program(
        "qscuenyptTNiEZbwBadv",
        "CUWFIxD",
        "XS",
        "normal brief report-identical-files context?= unified?= ed rcs side-by-side width= "
        "left-column suppress-common-lines show-c-function show-function-line= label= "
        "expand-tabs initial-tab tabsize= suppress-blank-empty no-dereference new-file "
        "unidirectional-new-file ignore-file-name-case no-ignore-file-name-case exclude= "
        "exclude-from=@ starting-file=@ from-file=@ to-file=@ ignore-case "
        "ignore-tab-expansion ignore-trailing-space ignore-space-change ignore-all-space "
        "ignore-blank-lines ignore-matching-lines= text strip-trailing-cr ifdef= "
        "line-format= old-line-format= new-line-format= unchanged-line-format= "
        "old-group-format= new-group-format= unchanged-group-format= "
        "changed-group-format= minimal horizon-lines= speed-large-files color?= palette=",
        # GNU diff follows symlinks unless told not to, also while recursing.
        follows="r recursive",
        # -l pipes the output through `pr`, found on PATH.
        runs="l paginate",
        unfollow=frozenset({"no-dereference"}),
    ),
    "cmp": _program("blsv", "in", long="print-bytes ignore-initial= verbose bytes= quiet silent"),
    "grep": _GREP,
    "egrep": _GREP,
    "fgrep": _GREP,
    "sort": _program(
        "bdfgiMhnRrVcCmsuz",
        "kSt",
        long="ignore-leading-blanks dictionary-order ignore-case general-numeric-sort "
        "ignore-nonprinting month-sort human-numeric-sort numeric-sort random-sort "
        "random-source=@ reverse sort= version-sort batch-size= check?= debug key= merge "
        "stable buffer-size= field-separator= parallel= unique zero-terminated",
        writes="o=@ output=@ T=@ temporary-directory=@",
        runs="compress-program=",
        indirect="files0-from=@",
    ),
    "nl": _program(
        "p",
        "bdfhilnsvw",
        long="body-numbering= section-delimiter= footer-numbering= header-numbering= "
        "line-increment= join-blank-lines= number-format= no-renumber number-separator= "
        "starting-line-number= number-width=",
    ),
    "od": _program(
        "abcdfilosxv",
        "AjNSt",
        long="w?= address-radix= endian= skip-bytes= read-bytes= strings?= format= "
        "output-duplicates width?= traditional",
    ),
    "cut": _program(
        "nsz",
        "bcdf",
        long="bytes= characters= delimiter= fields= complement only-delimited "
        "output-delimiter= zero-terminated",
    ),
    "tac": _program("br", "s", long="before regex separator="),
    "rev": _program("0", long="zero"),
    "strings": _program(
        "adfwo" + _DIGITS,
        "ntTesU",
        long="all data print-file-name bytes= radix= include-all-whitespace target= "
        "encoding= unicode= output-separator=",
        response_files=True,
    ),
    "file": _program(
        "bcEhikLlNn0rsd",
        "eFP",
        long="brief checking-printout exclude= exclude-quiet= separator= mime mime-type "
        "mime-encoding apple extension keep-going list dereference no-dereference "
        "no-buffer no-pad print0 raw special-files parameter= debug",
        writes="C compile",
        # Looking inside compressed files may start a decompressor found on PATH.
        runs="z Z uncompress uncompress-noreport",
        indirect="f=@ files-from=@",
    ),
    "tree": _program(
        "adfxiqNQpugshDFvtcUrnCXJ",
        "LPIHT",
        long="noreport charset= filelimit= timefmt= sort= dirsfirst filesfirst inodes "
        "device si du prune matchdirs ignore-case info infofile=@ gitignore gitfile=@ "
        "metafirst fromfile nolinks hintro=@ houtro=@",
        follows="l",
        # -R runs tree again in every folder with `-o 00Tree.html`.
        writes="o=@ R",
    ),
    "comm": _program(
        "123z", long="check-order nocheck-order output-delimiter= total zero-terminated"
    ),
    "column": _program(
        "tdeLJx",
        "nONlEHRTWripcos",
        long="table table-name= table-order= table-columns= table-columns-limit= "
        "table-noextreme= table-noheadings table-header-repeat table-hide= table-right= "
        "table-truncate= table-wrap= keep-empty-lines json tree= tree-id= tree-parent= "
        "output-width= output-separator= separator= fillrows",
    ),
    "uniq": _program(
        "cdDiuz",
        "fsw",
        long="count repeated all-repeated?= skip-fields= group?= ignore-case skip-chars= "
        "unique zero-terminated check-chars=",
        writes_operand=1,
    ),
    "xxd": ReadOnlyProgram(
        options=_options(
            "a autoskip b bits C capitalize E EBCDIC e i include p ps postscript plain r "
            "revert d u uppercase h help v version c= cols= g= groupsize= l= len= n= name= "
            "o= s= seek= R= -help -version"
        ),
        whole_word_options=True,
        writes_operand=1,
    ),
}
"""Read-only programs by exact name. Left out on purpose: pagers (less, more: input
preprocessors), anything with an exec or write option that can't be bounded (tar, git,
sed, awk), `seq`/`yes` (unbounded output), `which` (a shell script on some systems)."""


# --- find: its own expression language ------------------------------------------------------

_FIND_LEADING = {"H": SAFE, "P": SAFE, "L": FOLLOWS}
_FIND_FLAGS = frozenset(
    "print print0 ls prune quit true false not a o and or depth d xdev mount noleaf "
    "readable writable executable empty nouser nogroup daystart ignore_readdir_race "
    "noignore_readdir_race warn nowarn help version".split()
)
_FIND_DATA = frozenset(
    "name iname path ipath wholename iwholename regex iregex type xtype size mtime mmin "
    "atime amin ctime cmin user group uid gid perm maxdepth mindepth links inum lname "
    "ilname regextype fstype used printf context".split()
)
_FIND_PATHS = frozenset("newer anewer cnewer samefile".split())
_FIND_NEWER_XY = re.compile(r"newer[aBcm][aBcmt]")
_FIND_RUNS = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_WRITES = {"fprint": 1, "fprint0": 1, "fls": 1, "fprintf": 2}


def _find(args: Sequence[str]) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    paths: list[str] = []
    index = 0
    while index < len(args) and args[index] in ("-H", "-L", "-P"):
        kind = _FIND_LEADING[args[index][1:]]
        if kind != SAFE:
            findings.append(_option_finding("find", args[index], kind))
        index += 1
    # Starting points: every word before the expression.
    while index < len(args) and not (args[index].startswith("-") or args[index] in ("(", "!")):
        paths.append(args[index])
        index += 1
    while index < len(args):
        word = args[index]
        index += 1
        if word in ("(", ")", "!", ","):
            continue
        if not word.startswith("-"):
            paths.append(word)  # find refuses it; checked in case it is read anyway
            continue
        name = word[1:]
        if word in _FIND_RUNS:
            findings.append(_option_finding("find", word, RUNS))
            while index < len(args) and args[index] not in (";", "+"):
                index += 1
            index += 1
        elif name == "delete":
            findings.append(Finding(RUNS_ANYTHING_RISK, "option -delete of find deletes files"))
        elif name in _FIND_WRITES:
            findings.append(_option_finding("find", word, WRITES))
            paths.extend(args[index : index + 1])
            index += _FIND_WRITES[name]
        elif name == "files0-from":
            findings.append(_option_finding("find", word, INDIRECT))
            paths.extend(args[index : index + 1])
            index += 1
        elif name == "follow":
            findings.append(_option_finding("find", word, FOLLOWS))
        elif name in _FIND_PATHS or (_FIND_NEWER_XY.fullmatch(name) and name[-1] != "t"):
            paths.extend(args[index : index + 1])
            index += 1
        elif name in _FIND_DATA or _FIND_NEWER_XY.fullmatch(name):
            index += 1
        elif name not in _FIND_FLAGS:
            findings.append(_unknown_option("find", word))
    return findings, paths


READ_ONLY_PROGRAMS = frozenset(READ_ONLY) | {"find"}
"""Every program that can score low (by exact name)."""


# --- options in the getopt style ------------------------------------------------------------


def _option_finding(program: str, shown: str, kind: str, full: str = "") -> Finding:
    named = f"{_q(shown)} (short for --{full})" if full else _q(shown)
    return Finding(_KIND_RISK[kind], f"option {named} of {program} {_KIND_WHY[kind]}")


def _unknown_option(program: str, shown: str) -> Finding:
    return Finding(
        UNKNOWN_RISK, f"option {_q(shown)} of {program} is not on the list of harmless options"
    )


@dataclass
class _Parsed:
    findings: list[Finding] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    operands: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    follows: list[Finding] = field(default_factory=list)


def _use(
    parsed: _Parsed,
    program: str,
    name: str,
    shown: str,
    option: Option,
    value: str | None,
    full: str = "",
) -> None:
    parsed.seen.add(name)
    if option.kind == FOLLOWS:
        parsed.follows.append(_option_finding(program, shown, option.kind, full))
    elif option.kind != SAFE:
        parsed.findings.append(_option_finding(program, shown, option.kind, full))
    if value and option.value == PATH:
        parsed.paths.append(value)


def _long(parsed: _Parsed, program: str, spec: ReadOnlyProgram, word: str, rest: list[str]) -> None:
    name, attached, value = word[2:].partition("=")
    option = spec.options.get(name) if len(name) > 1 else None
    if option is None:
        # getopt takes any unambiguous abbreviation (--out for --output): one that could
        # stand for a risky option counts as that option, any other is unknown.
        risky = [
            (full, candidate)
            for full, candidate in spec.options.items()
            if len(full) > 1 and name and full.startswith(name) and candidate.kind != SAFE
        ]
        if not risky:
            parsed.findings.append(_unknown_option(program, word))
            return
        full, option = max(risky, key=lambda item: _KIND_RISK[item[1].kind])
    else:
        full = ""
    if option.value in (DATA, PATH):
        if not attached:
            value = rest.pop(0) if rest else ""
        _use(parsed, program, full or name, word, option, value, full)
    elif option.value == OPTIONAL:
        _use(parsed, program, full or name, word, option, value if attached else None, full)
    elif attached:
        parsed.findings.append(_unknown_option(program, word))  # takes no value
    else:
        _use(parsed, program, full or name, word, option, None, full)


def _short(
    parsed: _Parsed, program: str, spec: ReadOnlyProgram, word: str, rest: list[str]
) -> None:
    position = 1
    while position < len(word):
        char = word[position]
        position += 1
        option = spec.options.get(char)
        if option is None:
            parsed.findings.append(_unknown_option(program, f"-{char}"))
            continue
        tail = word[position:]
        if option.value in (DATA, PATH):
            value = tail if tail else (rest.pop(0) if rest else "")
            _use(parsed, program, char, f"-{char}", option, value)
            return
        if option.value == OPTIONAL:
            _use(parsed, program, char, f"-{char}", option, tail or None)
            return
        _use(parsed, program, char, f"-{char}", option, None)


def _parse(program: str, spec: ReadOnlyProgram, args: Sequence[str]) -> _Parsed:
    parsed = _Parsed()
    rest = list(args)
    ended = False
    while rest:
        word = rest.pop(0)
        if ended or word == "-" or not word.startswith("-"):
            parsed.operands.append(word)
        elif word == "--":
            ended = True
        elif spec.whole_word_options:
            option = spec.options.get(word[1:])
            if option is None:
                parsed.findings.append(_unknown_option(program, word))
            else:
                value = (rest.pop(0) if rest else "") if option.value in (DATA, PATH) else None
                _use(parsed, program, word[1:], word, option, value)
        elif word.startswith("--"):
            _long(parsed, program, spec, word, rest)
        else:
            _short(parsed, program, spec, word, rest)
    if not parsed.seen & spec.unfollow:
        parsed.findings.extend(parsed.follows)
    return parsed


def _read_only(program: str, spec: ReadOnlyProgram, args: Sequence[str]) -> _Parsed:
    if not spec.parse:
        return _Parsed()
    parsed = _parse(program, spec, args)
    operands = parsed.operands
    if spec.sets_clock:
        for operand in operands:
            if not operand.startswith("+"):
                parsed.findings.append(
                    Finding(WRITES_RISK, f"{program} {_q(operand)} sets the system clock")
                )
    if spec.operands != "paths":
        return parsed
    if spec.pattern_first and not parsed.seen & {"e", "f", "regexp", "file"}:
        operands = operands[1:]
    if spec.writes_operand is not None and len(operands) > spec.writes_operand:
        written = operands[spec.writes_operand]
        parsed.findings.append(
            Finding(WRITES_RISK, f"{program} writes its output to the file {_q(written)}")
        )
    for operand in operands:
        if spec.response_files and operand.startswith("@"):
            parsed.findings.append(
                Finding(
                    READS_OUTSIDE_RISK,
                    f"{program} {_q(operand)} reads more arguments, file names among them, "
                    "from a file the preview can't check",
                )
            )
            operand = operand[1:]
        if operand and operand != "-":
            parsed.paths.append(operand)
    return parsed


def _analysis(argv: Sequence[str]) -> tuple[str | None, list[Finding], list[str]]:
    """(the read-only program argv runs, or None; what its options do; its path words)."""
    program = argv[0]
    if program == "find":
        findings, paths = _find(argv[1:])
        return program, findings, paths
    spec = READ_ONLY.get(program)
    if spec is None:
        return None, [], []
    parsed = _read_only(program, spec, argv[1:])
    return program, parsed.findings, parsed.paths


def path_words(argv: Sequence[str]) -> list[str]:
    """The arguments that name files, in order, for the preview to resolve (`place_of`)."""
    return _analysis(argv)[2]


# --- where a path leads -----------------------------------------------------------------------


def _system(path: str) -> bool:
    normal = "/" + posixpath.normpath(path).lstrip("/")
    return any(normal == root or normal.startswith(root + "/") for root in _SYSTEM_ROOTS)


def lexical_place(word: str) -> str:
    """Where a path leads, as far as its text tells (no filesystem)."""
    if word.startswith("/") and _system(word):
        return SYSTEM
    # No shell expands it here, but a program might, and it never names the workspace.
    return OUTSIDE if word.startswith("~") else UNCHECKED


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def place_of(word: str, root: str) -> str:
    """Where a path argument leads from the workspace `root` (already a real path):
    resolved the way the kernel will (symlinks, then `..`), an absolute path too."""
    lexical = lexical_place(word)
    if lexical != UNCHECKED:
        return lexical
    try:
        target = os.path.realpath(os.path.join(root, word))
    except (OSError, ValueError):
        return UNCHECKED
    if _system(target):
        return SYSTEM
    if inside(target, root):
        return INSIDE
    if word.startswith("/") or ".." in word.split("/"):
        return OUTSIDE
    return LINK_OUT


def _path_finding(word: str, place: str) -> Finding | None:
    shown = _q(word)
    if place == INSIDE:
        return None
    if place == SYSTEM:
        return Finding(SYSTEM_FILES_RISK, f"path {shown} is under /proc, /sys or /dev")
    if place == LINK_OUT:
        return Finding(
            READS_OUTSIDE_RISK, f"path {shown} leads out of the workspace through a symlink"
        )
    if place == OUTSIDE and word.startswith("~"):
        return Finding(READS_OUTSIDE_RISK, f"path {shown} names a home folder")
    if place == OUTSIDE:
        return Finding(READS_OUTSIDE_RISK, f"path {shown} is outside the workspace")
    return Finding(
        READS_OUTSIDE_RISK, f"path {shown} could not be checked, so it may lead anywhere"
    )


# --- the whole command line ------------------------------------------------------------------


_SHELL_WORD_BREAK = re.compile(r"[\s;&|()<>`'\"{}]+")


def _looked_through(argv: Sequence[str]) -> list[Finding]:
    """A wrapper (`env VAR=1 bash -c`, `timeout 5 sudo rm`, `find -exec`) runs what
    follows it, and a shell's inline code runs what it names, so every later word is
    scored as a program too: over-counting a harmless word costs a reviewer a second
    look, under-counting hides what runs."""
    names = program_names(argv[0])
    looks_through = bool(names & (_WRAPPERS | _PRIVILEGED)) or (
        "find" in names and bool(_FIND_RUNS & set(argv))
    )
    words = list(argv[1:]) if looks_through else []
    if names & _SHELLS:
        for arg in argv[1:]:
            words.extend(word for word in _SHELL_WORD_BREAK.split(arg) if word)
    findings = []
    for index, word in enumerate(words):
        finding = program_finding(word, words[index + 1 :])
        if finding is not None:
            findings.append(finding)
    return findings


def assess(argv: Sequence[str], facts: Mapping[str, Any] | None) -> list[Finding]:
    """Every reason the command scores what it does, riskiest first; never empty.

    `facts` are the preview's: `program_facts` (the file PATH resolves argv[0] to,
    whether it or PATH is in the workspace) and `paths` (where each of `path_words`
    leads, `place_of`). A read-only program scores low only with those facts in hand.
    """
    facts = facts or {}
    findings: list[Finding] = []
    first = program_finding(argv[0], argv[1:])
    if first is not None:
        findings.append(first)
    findings.extend(_looked_through(argv))
    program, options, paths = _analysis(argv)
    if program is None:
        if first is None:
            findings.append(
                Finding(
                    UNKNOWN_RISK,
                    f"{_q(argv[0])} is not on the list of read-only programs: it may run "
                    "code or write files through its own options or configuration",
                )
            )
    else:
        findings.extend(options)
        findings.extend(_program_checks(program, facts))
        places = facts.get("paths")
        if not (isinstance(places, list) and len(places) == len(paths)):
            places = [lexical_place(word) for word in paths]
        for word, place in zip(paths, places, strict=True):
            finding = _path_finding(word, str(place))
            if finding is not None:
                findings.append(finding)
    findings.append(Finding(READ_ONLY_RISK, ""))
    return sorted(set(findings), key=lambda item: (-item.risk, item.why))


def _program_checks(program: str, facts: Mapping[str, Any]) -> list[Finding]:
    found = facts.get("program")
    if not found:
        return [
            Finding(
                UNKNOWN_RISK,
                f"which {_q(program)} runs could not be checked (not found on the worker's "
                "PATH, or no preview)",
            )
        ]
    if facts.get("search_path_in_workspace") is not False:
        return [
            Finding(
                UNKNOWN_RISK,
                "the worker's PATH has a folder in the workspace (or a relative one), so "
                f"{_q(program)} may not be the system's program",
            )
        ]
    if facts.get("program_in_workspace") is not False:
        return [
            Finding(
                UNKNOWN_RISK,
                f"{_q(program)} resolves to {_q(str(found))}, a file in the workspace, "
                "not the system's program",
            )
        ]
    return []


def command_risk(argv: Sequence[str], facts: Mapping[str, Any] | None) -> int:
    return max(0, min(100, assess(argv, facts)[0].risk))


def find_program(word: str, root: str, search_path: Sequence[str]) -> str | None:
    """The file the command would run, as `subprocess` finds it: a name is looked up on
    PATH, and a relative PATH entry (or an empty one) is relative to the workspace, where
    the command starts."""
    for directory in [""] if "/" in word else search_path:
        candidate = os.path.join(root, directory, word)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def program_facts(word: str, root: str, search_path: Sequence[str]) -> dict[str, Any]:
    """What the preview records about the program for `assess`: the file that would run,
    whether it is in the workspace, and whether PATH searches the workspace at all (a
    script such as egrep looks up the programs it runs on the same PATH)."""
    program = find_program(word, root, search_path)
    return {
        "program": program,
        "program_in_workspace": program and inside(os.path.realpath(program), root),
        "search_path_in_workspace": any(
            not os.path.isabs(directory) or inside(os.path.realpath(directory), root)
            for directory in search_path
        ),
    }


def scope_of(argv: Sequence[str]) -> str:
    """What a standing approval on this command covers: the program, and its options in
    order (the `--opt=value` forms whole), and any path that leaves the workspace by its
    text, so a grant on `ls -la` covers `ls -la subdir` but not `ls -la --color=always`,
    `ls -la /etc`, `git ...`, `cp ...` or `./ls -la`. A program off the read-only list,
    or one whose options or operands write or run code, is covered only as the exact
    command."""
    # A name is looked up on the worker's PATH: `ls` is the system's ls. A path names the
    # file itself, and `./ls` (a script the workspace holds) or `/tmp/x/ls` is not the ls
    # a reviewer granted: the path stays in the key, as written.
    word = argv[0]
    program = word if "/" in word or "\\" in word else program_name(word)
    if program not in READ_ONLY:
        # Off the read-only list the words that aren't options choose what happens too
        # (`git status` and `git init x`, `dd if=a of=b`), and score alike: the reviewer
        # saw one command, so only that command is covered.
        return " ".join(quoted(item) for item in [program, *argv[1:]])
    _, findings, paths = _analysis([program, *argv[1:]])
    if any(finding.risk > READ_ONLY_RISK for finding in findings):
        # An option or operand that writes, runs code, follows links or reads names from
        # elsewhere (`sort -o F`, `uniq IN OUT`, `grep -R`): what it acts on is part of
        # what the reviewer saw, so only that command is covered.
        return " ".join(quoted(item) for item in [program, *argv[1:]])
    options = [arg for arg in argv[1:] if arg.startswith("-")]
    # A path that leaves the workspace by its text (`/etc/x`, `../x`, `~/x`) is what the
    # reviewer saw too: a grant on `cat ../notes` never covers `cat ~/.aws/credentials`.
    # Paths inside stay free (`ls -la` covers `ls -la logs`); a link out scores higher.
    leaving = [word for word in paths if word.startswith(("/", "~")) or ".." in word.split("/")]
    return " ".join(quoted(item) for item in [program, *options, *leaving])
