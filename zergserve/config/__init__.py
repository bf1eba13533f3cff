"""One option table for everything: command line, config files, environment, `--help` and docs.

## Sources and precedence

Lowest to highest:

1. built-in defaults;
2. config files, in the order given: first those named in the environment (`UWSGI_INI=app.ini`,
   `ZERGSERVE_TOML=...`), then `--ini FILE[:section]`, `--json`, `--toml`, `--yaml`, `--include`
   and bare `FILE.ini` / `.json` / `.toml` / `.yaml` arguments, each read where it appears on the
   command line. A file may name others (`ini = base.ini` or `include = base.toml`, relative to the
   including file; `ini = :zerg` is a section of the same file), which are read in its place, at
   most 16 deep;
3. `UWSGI_<OPTION>` environment variables (upper case, `-` → `_`: `UWSGI_BUFFER_SIZE`). uWSGI's
   internal variables (`UWSGI_RELOADS`, `UWSGI_EMPEROR_FD`, `UWSGI_VASSAL_*`, …) are ignored; any
   other name that is no option is ignored with a warning;
4. `ZERGSERVE_<OPTION>` environment variables. A name that is no option is an error: a typo in
   our own namespace should fail loudly;
5. the command line;
6. files read with `inherit` (uWSGI's templates), which uWSGI appends after everything else, the
   command line included.

A scalar takes the value of the highest source that sets it (within one source, the last
occurrence). A repeatable option collects the values of every source, lowest first. An environment
variable gives one value.

Every error of a run is reported at once (each naming its file and line, flag or variable), and the
process exits 2. A name that is no option gets a hint: where it has another name here, that name
(gunicorn's `--timeout` → `--harakiri`); a uWSGI option zergserve lacks is "not supported yet";
otherwise the closest option name, if one is close. Options that change nothing here
(the "uWSGI compatibility" group below, and `master = false`) are accepted with one warning line
saying why.

## Files

* ini: uWSGI's dialect (`key = value`, `#`/`;` comment lines, repeated keys repeat the option; a
  bare `key` is a flag set to true). Without a section, `[uwsgi]` and then `[zergserve]` are read,
  so `[zergserve]` wins for scalars; `FILE:section` reads only that section.
* json / toml / yaml: a `uwsgi` and/or `zergserve` object of `key: value`, the value a string,
  number, boolean or list of them (a list repeats the option).
* Flags take `true/false`, `yes/no`, `on/off`, `1/0`; an empty value means true.

Values in files (not on the command line or in the environment, where the shell has done its
part) are expanded, uWSGI style. Anything that looks like one of these and is not known (`%Y`,
`%(a + b)`, `@(http://…)`) is an error, never left as text:

| syntax | becomes |
|---|---|
| `%d` | directory of the file, with a trailing `/` |
| `%p` | absolute path of the file (symlinks not resolved) |
| `%s` | file name |
| `%n` | file name without extension |
| `%e` | extension, without the dot |
| `%c` | name of the file's directory |
| `%0` … `%9` | the components of the file's directory (`/etc/vassals/a.ini`: `%0` = `etc`, `%1` = `vassals`) |
| `%x` | the section asked for (`app.ini:zerg` → `zerg`), else empty |
| `%o` | the file name as given |
| `%i` | the file's inode number |
| `%j` | uWSGI's djb33x hash of `%p`, 8 hex digits |
| `%D %P %S %N %E %C %X %O %I %J` | the same, of the first file read that was not an `include` or `inherit` template (a vassal's own file, seen from a shared template) |
| `%v` | the working directory |
| `%h` | the host name |
| `%k` | the number of CPUs |
| `%t`, `%T` | the Unix time at start, in seconds and microseconds |
| `%u`, `%U` | the uid and user name; `%g`, `%G` the gid and group name |
| `%V` | the zergserve version |
| `%[` | the ESC character (for colours) |
| `%%` | `%` |
| `%(name)` | the value of an option or placeholder set earlier (in a file, by `--set` or on the command line before the file) |
| `%(_)` | inside a `for` or `if-*` block: the loop item, or what the condition found |
| `$(NAME)` | the environment variable `NAME` (empty if unset); `$(NAME:-DEFAULT)` if unset or empty, `$(NAME-DEFAULT)` if unset |
| `@(FILE)` | the content of FILE (relative to the working directory, as in uWSGI), less one trailing newline |
| `@(exec://COMMAND)` | the output of the shell command, less one trailing newline; a failing command is an error |

The access log's own placeholders (`log-format = %(addr) %(method) %(uri) %(status)`) are left for
`--log-format`, as uWSGI leaves them, unless set as placeholders first; a `--logdate` format in a file
doubles its `%`s (`log-date = %%Y-%%m-%%d`), as in uWSGI.

A key that is no option is an error naming the file, line and key, unless the loaded
configuration uses it as `%(key)`: that is how uWSGI users define their own placeholders.
`--set key=value` sets the option `key`, or the placeholder `key` if there is no such option;
`set-placeholder` (`set-ph`) always sets a placeholder.

Configuration logic (uWSGI's): a block's lines are kept only if its condition holds, or repeated
once per item of a loop, with `%(_)` set; blocks do not nest (nor do they in uWSGI).

| block | lines kept | `%(_)` |
|---|---|---|
| `for = a b c` … `endfor` | once per space-separated item | the item |
| `for-glob = PATTERN`, `for-readline = FILE`, `for-times = N` | once per matching path, non-empty line, or 1…N | the item |
| `if-env = NAME` or `NAME=VALUE` … `endif` | if the variable is set (to VALUE) | its value |
| `if-opt = NAME` or `NAME=VALUE` | if the option or placeholder is set so far (to VALUE) | its value |
| `if-exists`, `if-file`, `if-dir = PATH` | if PATH is readable, a regular file, a directory | PATH |
| `if-hostname = NAME` | if the host is called NAME | NAME |
| `if-not-…` of each | if it does not hold | as above, when there is one |

`include = FILE` reads a file of any format (by its extension) in place, as `ini =` does for an ini
file. `inherit = FILE` reads a template whose settings come after every other source; as in uWSGI,
only its magic variables are expanded, so `$()`, `@()` and `%()` there are errors.

## Command line

`--name value`, `--name=value`, `-p 4`, `-p4`; flags take no value (`--master`, `-M`, clustered
`-ML`; `--master=false` in full). An option with an optional value (`--chmod-socket`) takes the
next argument only if it is a valid value, so prefer `--chmod-socket=660`. A bare argument ending
in `.ini`, `.json`, `.js`, `.toml`, `.yaml` or `.yml` (optionally `:section`) is loaded as a
config file; any other bare argument is an error.
"""

from zergserve.config.docs import help_text, render_markdown
from zergserve.config.environment import is_option_variable
from zergserve.config.errors import ConfigError, HelpRequested, VersionRequested
from zergserve.config.files import CONFIG_FD_VARIABLE, parse_file
from zergserve.config.merge import load
from zergserve.config.options import OPTIONS, Option, find
from zergserve.config.view import Config

__all__ = ["CONFIG_FD_VARIABLE", "Config", "ConfigError", "HelpRequested", "OPTIONS", "Option", "VersionRequested",
           "find", "help_text", "is_option_variable", "load", "parse_file", "render_markdown"]
