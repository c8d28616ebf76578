"""The WAF's signature rules, as data (the engine is :mod:`api.waf`).

Every rule matches *normalised* text: lowercased, whitespace runs collapsed (a run holding a
newline becomes one newline, since a newline separates shell commands), and, in extra
variants, SQL comments replaced by a space or removed inside words, percent-encoding
decoded (twice) and HTML entities decoded. Patterns are therefore written in lowercase.

Scores follow the OWASP CRS anomaly model: a high-confidence signature is CRITICAL (5) and
blocks alone at the default threshold of 5; weaker hints (WARNING 3, NOTICE 2) only block
when several different ones add up. The paranoia level (1-4) says how eager a rule is: PL1
rules are meant to have no false positives on real shop traffic, higher levels trade false
positives for coverage and are only loaded when the operator asks for them.

Targets say where a rule runs: the decoded path, query parameter names and values, header
values (only at PL2 and up: see :mod:`api.waf`), the User-Agent (scanner rules) and body
fields.

Speed contract: :data:`TRIGGER` is one regex over the characters and words that attacks
need (quotes, ``<``, ``;``, ``..``, ``union``, ``etc/``...). The engine runs it once over a
string to list the tokens it holds, and then runs only the rules whose ``needs`` name one
of those tokens: most strings hold none and cost that one search, and a product title with
an apostrophe runs the two or three quote rules, not all fifty. A rule led by one of
several characters (a shell separator, a quote) is given as ``starts``: one branch per
character, each beginning with it literally, run only when that character is there. A rule
must therefore never match text that holds none of its ``needs``; :func:`check_rules`
refuses a need that is not a token, and ``tests/unit/test_waf.py`` checks the promise on
the corpora and on random text. Ids, SKUs and slugs (letters, digits, ``_``, single ``-``)
are settled without even that, so no rule may match such text alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Category(StrEnum):
    SQLI = "sqli"
    XSS = "xss"
    PATH_TRAVERSAL = "path_traversal"
    COMMAND_INJECTION = "command_injection"
    SCANNER = "scanner"


class Target(StrEnum):
    PATH = "path"
    QUERY = "query"
    HEADERS = "headers"
    USER_AGENT = "user_agent"
    BODY = "body"


class Score(IntEnum):
    CRITICAL = 5
    WARNING = 3
    NOTICE = 2


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity: fast
class Rule:
    id: str
    category: Category
    pattern: re.Pattern[str]
    score: int
    paranoia: int
    targets: frozenset[Target]
    description: str
    # Trigger tokens (TRIGGER_CHARS or TRIGGER_WORDS) one of which any text this rule
    # matches contains: the engine runs the rule only on text where the trigger regex found
    # one. Empty for User-Agent rules, which run on every User-Agent.
    needs: tuple[str, ...]
    # (token, regex) pairs the engine runs instead of ``pattern`` when it found the token:
    # for a rule that starts with one of several characters, one regex per character that
    # starts with it literally (the fastest search Python's engine has). Together they
    # match what ``pattern`` matches.
    branches: tuple[tuple[str, re.Pattern[str]], ...]


ATTACK_TARGETS = frozenset({Target.PATH, Target.QUERY, Target.HEADERS, Target.BODY})
UA_ONLY = frozenset({Target.USER_AGENT})

# A string holding none of these (lowercased) cannot match any rule (see the module doc).
TRIGGER_CHARS = "<>'\"`;|&$()\\=%\x00\n#"
TRIGGER_WORDS = (
    "--", "/*", "..", "union", "select", "script", "document", "window", "data:", "://",
    "etc/", "proc/", "winnt", ".ini", "var/", "usr/", "id_", "web.config", "wp-",
    "dev/", "bin/", "mkfifo", "powershell", "chmod", "information_schema", "sys", "pg_",
    "sqlite_", "mysql.", "xp_", "dbms_", "utl_", "outfile", "dumpfile", "0x", "phpmyadmin",
    "xmlrpc", "*/", "inetpub", ".env", ".git", ".ssh", ".aws", ".svn", ".hg",
    ".ht", ".bash", ".npmrc", ".netrc", "pma", "cgi-bin", "@@", "load_file", "extractvalue",
    "updatexml", "group_concat", "sleep", "benchmark", "waitfor", "randomblob", "eval",
    "alert", "prompt", "confirm", "fromcharcode", "innerhtml",
)  # fmt: skip


_Trie = dict[str, "_Trie"]


def _trie(words: Iterable[str]) -> str:
    """One alternation with shared prefixes factored out: Python's regex engine tries the
    branches of an alternation one by one, so ``s(?:elect|ys)`` is cheaper than
    ``select|sys`` at every position of every scanned string."""
    tree: _Trie = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        if "" in node:
            return ""  # a shorter word is already enough to trigger
        branches = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(tree)


def trigger_pattern(structural: str = "") -> str:
    """The trigger test as a regex, less the ``structural`` characters (in a raw query
    string or form body ``=`` and ``&`` are syntax, not data)."""
    chars = "".join(ch for ch in TRIGGER_CHARS if ch not in structural)
    return "[" + re.escape(chars) + "]|" + _trie(TRIGGER_WORDS)


# findall lists every token, overlapping ones too: in "etc/*" both "etc/" and "/*".
TRIGGER = re.compile("(?=(" + trigger_pattern() + "))")

# ---------------------------------------------------------------------------- fragments

# Commands that are not English words: after a shell separator they are an attack.
_STRONG_CMDS = (
    r"(?:whoami|uname|wget|ifconfig|ipconfig|nslookup|netcat|ncat|chmod|chown|chgrp|printenv"
    r"|certutil|powershell|pwsh|busybox|mkfifo|socat|tftp|telnet|systeminfo|tasklist|wmic"
    r"|bitsadmin|mshta|rundll32|regsvr32|crontab|useradd|nohup|xterm|cmd\.exe|cmd\s+/[ck]"
    r"|net\s+(?:user|localgroup|share)|nc\s+-[a-z]*[elvp]|nc\s+(?:-[a-z]+\s+)*[\w.-]+\s+\d{2,5}\b"
    r"|(?:/usr(?:/local)?)?/s?bin/[a-z0-9_.-]+)"
)
# Commands that are also words ("cat", "echo", "id"): they need a shell-looking argument.
_WEAK_CMDS = (
    r"(?:cat|tac|ls|dir|id|rm|cp|mv|echo|printf|ping|curl|nc|python[23]?|perl|ruby|php|bash"
    r"|sh|zsh|ksh|dash|sleep|kill|ps|env|pwd|nmap|ssh|scp|ftp|base64|tar|chattr|lsof|netstat"
    r"|xargs|head|tail|find|grep|awk|sed|od|xxd)"
)
# A flag, a path, a variable, a URL or an IP address: what follows a command, not a word.
_SHELL_ARG = (
    r"\s+(?:-{1,2}[a-z]|[/~\\]|\$(?![\d\s.,])|\.{1,2}/|[a-z]+://|\d{1,3}(?:\.\d{1,3}){3}\b"
    r"|[a-z]:\\)"
)
# A shell separator ("$" only as "$("). A newline separates commands too, but every
# multi-line description holds one: it has a rule of its own (cmdi-newline-command).
_SEP = r"[;|`&$](?<!\$)|\$\("
# (token, the regex that starts a match with it) for rules led by a separator or a quote.
_SEPARATORS = ((";", ";"), ("|", r"\|"), ("&", "&"), ("`", "`"), ("$", r"\$\("))
_QUOTES = (("'", "'"), ('"', '"'), ("`", "`"))
# Glued to a separator with nothing after (";id", "|ls"): only words that are rarely text,
# since "dog|cat" is a product attribute.
_GLUED_CMDS = r"(?:id|ls|pwd|ps|env|dir|netstat|ifconfig)"
_EVENTS = (
    r"(?:error|load\w*|unload|click|dblclick|mouse\w+|key\w+|focus\w*|blur|change|submit|reset"
    r"|select\w*|abort|toggle|begin|end|animation\w+|transition\w+|pointer\w+|touch\w+|drag\w*"
    r"|drop|copy|cut|paste|input|invalid|scroll|wheel|resize|hashchange|message|pageshow"
    r"|popstate|beforeunload|play\w*|pause|ended|seek\w*|progress|contextmenu|auxclick"
    r"|beforeprint|afterprint|start|finish|bounce|formdata|search|show|webkit\w+"
    r"|securitypolicyviolation)"
)
_QUOTE = r"['\"`]"
_SCANNERS = (
    r"sqlmap|nikto|nmap|masscan|acunetix|nessus|wpscan|dirbuster|gobuster|dirb|zgrab2?|nuclei"
    r"|openvas|w3af|arachni|skipfish|wfuzz|ffuf|feroxbuster|havij|netsparker|invicti|appscan"
    r"|webinspect|burpsuite|burp\s+suite|burpcollaborator|jaeles|whatweb|commix|fimap|xsstrike"
    r"|zmeu|morfeus|jorgee|sqlninja|dotdotpwn|bsqlbf|absinthe|paros|webshag|owasp\s+zap|zaproxy"
    r"|qualys|httprint|hydra|wapiti|metasploit|pangolin|bbqsql|nosqlmap|tplmap|wafw00f"
    r"|joomscan|droopescan|cmsmap|interactsh|dirsearch|httpx-toolkit|naabu|katana"
)


def _rule(
    rule_id: str,
    category: Category,
    paranoia: int,
    score: int,
    pattern: str,
    description: str,
    targets: frozenset[Target] = ATTACK_TARGETS,
    *,
    needs: tuple[str, ...] = (),
    starts: tuple[tuple[str, str], ...] = (),
) -> Rule:
    """A rule; with ``starts``, ``pattern`` is what follows one of them, and each start is
    a branch of its own (its token is then the need)."""
    if starts:
        branches = tuple((token, re.compile(lead + pattern, re.DOTALL)) for token, lead in starts)
        needs = tuple(token for token, _ in starts)
        pattern = "(?:" + "|".join(lead for _, lead in starts) + ")" + pattern
        compiled = re.compile(pattern, re.DOTALL)
    else:
        compiled = re.compile(pattern, re.DOTALL)
        branches = tuple((need, compiled) for need in needs)
    return Rule(rule_id, category, compiled, score, paranoia, targets, description, needs, branches)


S, X, P, C = (
    Category.SQLI,
    Category.XSS,
    Category.PATH_TRAVERSAL,
    Category.COMMAND_INJECTION,
)
CRIT, WARN, NOTE = Score.CRITICAL, Score.WARNING, Score.NOTICE

# fmt: off
RULES: tuple[Rule, ...] = (
    # ------------------------------------------------------------------ SQL injection
    _rule(
        "sqli-union-select", S, 1, CRIT,
        r"\bunion(?:[\s(]+(?:all|distinct)\b)?[\s(]+select\b",
        "UNION [ALL] SELECT: reading other tables through the query",
        needs=("union",),
    ),
    _rule(
        "sqli-tautology-quoted", S, 1, CRIT,
        r"\s*\)*\s*(?:(?:or|and|xor)\b|\|\||&&)\s*\(*\s*"
        r"(?:" + _QUOTE + r"?[\w.]*" + _QUOTE + r"?\s*"
        r"(?:=|<>|!=|<=?|>=?|\blike\b|\bis\b|\bin\s*\(|\bbetween\b|\bregexp\b|\brlike\b)"
        r"|(?:true|false|null|not|exists)\b|\d+\s*(?:--|#|;|$))",
        "a quote closed, then OR/AND with a comparison: ' OR 1=1, ' or 'a'='a",
        starts=_QUOTES,
    ),
    _rule(
        "sqli-tautology-bare", S, 1, CRIT,
        r"(?:or(?<!\wor)|and(?<!\wand)|xor(?<!\wxor))\s+(?P<sqli_n>\d+)\s*(?:=|<=|>=)\s*"
        r"(?P=sqli_n)\b",
        "a numeric tautology: OR 1=1",
        needs=("=",),
    ),
    _rule(
        "sqli-quote-comment", S, 1, CRIT,
        r"\s*\)*\s*(?:--\s*-?\s*$|#\s*$|/\*)",
        "a quote closed and the rest of the query commented out: admin'--",
        starts=(*_QUOTES, (";", ";")),
    ),
    _rule(
        "sqli-stacked-query", S, 1, CRIT,
        r";\s*(?:drop\s+(?:table|database|schema|user|view|index|procedure|function)\b"
        r"|delete\s+from\b|insert\s+into\b|truncate\s+table\b"
        r"|update\s+[\w.`\"\[\]]+\s+set\s+[\w.`\"\[\]]+\s*="
        r"|alter\s+(?:table|user|database)\b|create\s+(?:table|database|login|procedure)\b"
        r"|exec(?:ute)?\s*(?:\(|@|[\w.]*xp_|[\w.]*sp_|master\.|immediate\b)|declare\s+@"
        r"|shutdown\b\s*(?:--|#|;|$|with\b)|grant\s+all\b|waitfor\b|load\s+data\b"
        r"|select\s+(?:\*|@@|null\b|\d+\s*[,;)]|\w+(?:\s*,\s*\w+)+\s+from\b"
        r"|\w+\s+from\s+[\w.]+\s*(?:where\b|$|;|--|#)"
        r"|(?:count|concat|group_concat|char|version|user|database|sleep|pg_sleep)\s*\())",
        "a second statement after a semicolon: ; DROP TABLE, ; SELECT * FROM",
        needs=(";",),
    ),
    _rule(
        "sqli-time-based", S, 1, CRIT,
        r"\b(?:pg_)?sleep\s*\(\s*\d+(?:\.\d+)?\s*\)|\bbenchmark\s*\(\s*\d+\s*,"
        r"|\bwaitfor\s+(?:delay|time)\s+['\"]|\bdbms_(?:pipe\.receive_message|lock\.sleep)\s*\("
        r"|\brandomblob\s*\(\s*\d{6,}",
        "blind time-based probes: SLEEP(5), BENCHMARK(..), WAITFOR DELAY",
        needs=("sleep", "benchmark", "waitfor", "dbms_", "randomblob"),
    ),
    _rule(
        "sqli-db-fingerprint", S, 1, CRIT,
        r"\b(?:from|join|exec(?:ute)?)\s+(?:master\.\.|[\w.]*\.)?(?:information_schema"
        r"|sys(?:objects|columns)|sqlite_(?:master|schema)|pg_(?:catalog|shadow|user)"
        r"|xp_cmdshell)\b|\b(?:information_schema|pg_catalog|sys|mysql)\.(?:tables|columns"
        r"|schemata|routines|objects|databases|user_objects|user|db|pg_\w+)\b"
        r"|\bsqlite_version\s*\(|\bxp_cmdshell\s*['\"(@]"
        r"|@@(?:version|datadir|hostname|basedir)\b|\butl_http\."
        r"|\bload_file\s*\(|\binto\s+(?:out|dump)file\b|\b(?:extractvalue|updatexml)\s*\("
        r"|\bgroup_concat\s*\(|\bdbms_\w+\.\w+",
        "system catalogs and functions only an injected query touches",
        needs=(
            "information_schema", "sys", "sqlite_", "pg_", "xp_", "mysql.", "@@", "utl_",
            "outfile", "dumpfile", "dbms_", "load_file", "extractvalue", "updatexml",
            "group_concat",
        ),
    ),
    _rule(
        "sqli-select-from", S, 2, WARN,
        r"\bselect\b[^;]{0,100}?\bfrom\b",
        "SELECT ... FROM (also in prose: 'select from our range')",
        needs=("select",),
    ),
    _rule(
        "sqli-quote-keyword", S, 2, WARN,
        r"\s*\)*\s*(?:or|and|xor|union|select|having|where|order\s+by|group\s+by)\b",
        "a quote followed by an SQL keyword (also in prose: Kids' and adults')",
        starts=_QUOTES,
    ),
    _rule(
        "sqli-comment", S, 2, WARN,
        r"/\*|\*/|--\s*-?\s*$",
        "an SQL comment",
        needs=("/*", "*/", "--"),
    ),
    _rule(
        "sqli-function-call", S, 2, WARN,
        r"\b(?:concat(?:_ws)?|char|chr|ascii|substring|substr|hex|unhex|version|database"
        r"|current_user|system_user|schema|cast|convert|md5|sha1|if|ifnull|coalesce)\("
        r"|(?:[=(,\s])0x[0-9a-f]{6,}",
        "SQL function calls and hex literals used to build strings",
        needs=("(", "0x"),
    ),
    _rule(
        "sqli-semicolon-keyword", S, 2, WARN,
        r";\s*(?:select|insert|update|delete|drop|exec|execute|declare|create|alter|truncate"
        r"|shutdown|union)\b",
        "a semicolon and an SQL verb (also in prose: 'Pick one; select size')",
        needs=(";",),
    ),
    _rule(
        "sqli-order-by-probe", S, 2, WARN,
        r"\border\s+by\s+\d+\s*(?:--|#)|\bhaving\s+\d+\s*=\s*\d+",
        "column-count probes: ORDER BY 10--",
        needs=("--", "#", "="),
    ),
    _rule(
        "sqli-keyword-pair", S, 3, NOTE,
        r"\b(?:select|union)\b.{1,200}?\b(?:from|where|union|select|into)\b",
        "two SQL keywords in one value",
        needs=("select", "union"),
    ),
    _rule(
        "sqli-meta-chars", S, 3, NOTE,
        r"(?:[^'\";`]*+['\";`]){4}",
        "four or more quotes or semicolons",
        needs=("'", "\"", "`", ";"),
    ),
    _rule(
        "sqli-single-quote", S, 4, NOTE,
        r"'",
        "any single quote (O'Reilly too): paranoid",
        needs=("'",),
    ),
    # ------------------------------------------------------------------ XSS
    _rule(
        "xss-script-tag", X, 1, CRIT,
        r"<\s*/?\s*script\b",
        "a <script> tag",
        needs=("<",),
    ),
    _rule(
        "xss-js-uri", X, 1, CRIT,
        r"(?:java|vb|live|ecma)\s*script\s*:(?!\s|$)"
        r"|\bdata:\s*(?:text/html|application/(?:x-)?(?:java|ecma)script)",
        "javascript: and data:text/html URIs (not 'JavaScript: The Good Parts')",
        needs=("script", "data:"),
    ),
    _rule(
        "xss-event-handler", X, 1, CRIT,
        r"on(?<!\won)" + _EVENTS + r"\s*=|<[a-z][^>]{0,200}?[\s/\"']on[a-z]{3,}\s*=",
        "an event handler attribute: onerror=, onload=, <svg/onload=",
        needs=("=",),
    ),
    _rule(
        "xss-dangerous-tag", X, 1, CRIT,
        r"<\s*/?\s*(?:iframe|frame|frameset|object|embed|applet|svg|math|base|meta|isindex"
        r"|bgsound|xss)\b",
        "tags that load or run content: <iframe, <svg, <object, <embed",
        needs=("<",),
    ),
    _rule(
        "xss-dom-sink", X, 1, CRIT,
        r"\bdocument\s*\.\s*(?:cookie|domain|write|location)\b|\bwindow\s*\.\s*(?:location|open)\b"
        r"|\.innerhtml\s*=|\bfromcharcode\s*\("
        r"|\beval\s*\(\s*(?:atob|unescape|string|decodeuri\w*|location|name|window|document"
        r"|this|['\"`]|\w+\s*\()"
        r"|\b(?:alert|prompt|confirm)(?:\((?:\d|['\"`]|document|window|this|/|\))|`)",
        "JavaScript sinks and probes: document.cookie, eval(, alert(1)",
        needs=(
            "document", "window", "eval", "alert", "prompt", "confirm", "fromcharcode",
            "innerhtml",
        ),
    ),
    _rule(
        "xss-tag-breakout", X, 2, WARN,
        r"['\"]\s*/?\s*>\s*<",
        "closing an attribute and opening a tag: \"><",
        needs=("'", "\""),
    ),
    _rule(
        "xss-risky-tag", X, 2, WARN,
        r"<\s*/?\s*(?:img|image|video|audio|body|style|form|link|input|button|textarea|details"
        r"|marquee|template|source|dialog|noscript|html)\b",
        "HTML tags that take URLs or handlers (also in HTML product descriptions)",
        needs=("<",),
    ),
    _rule(
        "xss-generic-handler", X, 2, WARN,
        r"\bon[a-z]{3,24}\s*=",
        "anything that looks like an on*= attribute (also 'onsale=1')",
        needs=("=",),
    ),
    _rule(
        "xss-css-script", X, 2, WARN,
        r"\bexpression\s*\(|\burl\s*\(\s*['\"]?\s*(?:javascript|data):|data:image/svg\+xml",
        "script in CSS or SVG data URIs",
        needs=("(", "data:"),
    ),
    _rule(
        "xss-encoded-angle", X, 2, WARN,
        r"&#x?0*(?:3c|60|3e|62);?|\\u00?3c|\\x3c",
        "an entity- or escape-encoded angle bracket",
        needs=("&", "\\"),
    ),
    _rule(
        "xss-any-tag", X, 3, NOTE,
        r"<\s*/?\s*[a-z][a-z0-9]*(?:\s[^>]*)?/?>",
        "any HTML tag",
        needs=("<",),
    ),
    _rule(
        "xss-angle-bracket", X, 4, NOTE,
        r"[<>]",
        "any angle bracket (prices like '<50' too): paranoid",
        needs=("<", ">"),
    ),
    # ------------------------------------------------------------------ path traversal
    _rule(
        "lfi-dot-dot-slash", P, 1, CRIT,
        r"(?:^|[\\/=\s'\":])\.{2,}[\\/]|[\\/]\.{2,}(?:[;\\/]|$)",
        "a ../ or ..\\ path segment",
        needs=("..",),
    ),
    _rule(
        "lfi-encoded-traversal", P, 1, CRIT,
        # Every branch starts with "%" (the dots before it are looked behind for).
        r"%(?:25)*2e(?:%(?:25)*2e|\.)|%(?<=\.%)(?:25)*2e"
        r"|%(?<=\.\.%)(?:(?:25)*(?:2f|5c)|c0%af|c1%9c|e0%80%af|u2215|u2216|u002f|u005c)"
        r"|%(?:u002e|c0%ae|e0%80%ae|c1%9c|c0%af)",
        "a percent-, double- or overlong-UTF-8-encoded ../",
        needs=("%",),
    ),
    _rule(
        "lfi-os-files", P, 1, CRIT,
        r"(?:^|[\\/\s'\"=:])(?:etc[\\/]+(?:passwd|shadow|group|hosts|issue|sudoers|crontab"
        r"|master\.passwd|security[\\/])|proc[\\/]+(?:self|\d+)[\\/]"
        r"|(?:windows|winnt)[\\/]+(?:system32|win\.ini|system\.ini|repair)"
        r"|(?:var|usr)[\\/]+(?:log|local)[\\/])"
        r"|\b(?:boot|win|system)\.ini\b|[a-z]:[\\/]+(?:windows|winnt|boot\.ini|inetpub)\b"
        r"|(?:^|[\\/])\.(?:ssh|aws|git|svn|hg)[\\/]"
        r"|(?:^|[\\/])\.(?:env|htaccess|htpasswd|bash_history|npmrc|netrc|git-credentials)\b"
        r"|[\\/]id_(?:rsa|dsa|ecdsa|ed25519)\b|\bweb\.config\b|\bwp-config\.php\b",
        "operating system and secret files: /etc/passwd, c:\\windows, .env, .git/",
        needs=(
            "etc/", "proc/", "window", "winnt", ".ini", "var/", "usr/", ".ssh", ".aws", ".git",
            ".svn", ".hg", ".env", ".ht", ".bash", ".npmrc", ".netrc", "id_", "web.config",
            "wp-", "\\", "inetpub",
        ),
    ),
    _rule(
        "lfi-null-byte", P, 1, CRIT,
        r"\x00|%00|\\x00|\\u0000",
        "a NUL byte, to cut a file name short",
        needs=("\x00", "%", "\\"),
    ),
    _rule(
        "lfi-stream-wrapper", P, 1, CRIT,
        # "://" first, the scheme looked behind for, grouped by length (fixed width).
        r"://(?:(?<=(?:php|zip|jar|ogg|rar)://)|(?<=(?:file|phar|glob|dict|ldap|tftp|ssh2|zlib"
        r"|data)://)|(?<=(?:expect|gopher|netdoc)://))",
        "file:// php:// and other wrappers that read local files or reach internal hosts",
        needs=("://",),
    ),
    _rule(
        "lfi-dot-dot-anywhere", P, 2, WARN,
        r"\.\.[\\/]",
        "../ anywhere (also 'Wait.../')",
        needs=("..",),
    ),
    _rule(
        "lfi-system-dir", P, 2, WARN,
        r"[\\/](?:etc|proc|sys|dev|var|usr|bin)[\\/]",
        "a Unix system directory",
        needs=("etc/", "proc/", "sys", "dev/", "var/", "usr/", "bin/", "\\"),
    ),
    # ------------------------------------------------------------------ command injection
    _rule(
        "cmdi-separator-command", C, 1, CRIT,
        r"\s*['\"\\]?" + _STRONG_CMDS + r"\b",
        "a shell separator then a command that is no English word: ; whoami, && wget",
        starts=_SEPARATORS,
    ),
    _rule(
        "cmdi-command-with-args", C, 1, CRIT,
        r"(?:\s*" + _WEAK_CMDS + _SHELL_ARG + "|" + _GLUED_CMDS + r"\s*(?:$|[;|&`]))",
        "a separator, a command and a shell argument: ; cat /etc/passwd, ; rm -rf, ;id;",
        starts=_SEPARATORS,
    ),
    _rule(
        "cmdi-newline-command", C, 1, CRIT,
        r"\n\s*['\"\\]?(?:" + _STRONG_CMDS + r"\b|" + _WEAK_CMDS + _SHELL_ARG + ")",
        "a command on a line of its own: %0auname -a",
        needs=("\n",),
    ),
    _rule(
        "cmdi-subshell", C, 1, CRIT,
        r"\$\(\s*(?:" + _WEAK_CMDS + "|" + _STRONG_CMDS + r")\b|\$\(\s*[/\\]"
        r"|`\s*" + _STRONG_CMDS + r"\b[^`]*`|`\s*" + _WEAK_CMDS + r"(?:\s[^`]*)?`"
        r"|\$\{\s*(?:ifs|path|home|shell|user|pwd)\s*\}|\$ifs\b",
        "command substitution: $(whoami), `id`, ${IFS}",
        needs=("$", "`"),
    ),
    _rule(
        "cmdi-reverse-shell", C, 1, CRIT,
        r"/dev/(?:tcp|udp)/|sh\s+-[a-z]*i\s*[<>|]|exec\s+\d+\s*<>|mkfifo\s",
        "reverse shells: bash -i >& /dev/tcp/.., mkfifo",
        needs=("dev/", "<", ">", "|", "mkfifo"),
    ),
    _rule(
        "cmdi-pipe-to-shell", C, 1, CRIT,
        r"\|\s*(?:ba|z|k|da)?sh\b\s*(?:$|-|;)",
        "piping into a shell: curl http://x | sh",
        needs=("|",),
    ),
    _rule(
        "cmdi-powershell", C, 1, CRIT,
        r"\bpowershell(?:\.exe)?\s+-(?:e|enc|encodedcommand|nop|noprofile|w|c)\b",
        "PowerShell with an encoded or inline command",
        needs=("powershell",),
    ),
    _rule(
        "cmdi-sleep", C, 1, CRIT,
        r"(?:" + _SEP + r")\s*sleep\s+\d+\s*(?:$|[;|&`#)])",
        "a blind timing probe: ; sleep 10",
        needs=("sleep",),
    ),
    _rule(
        "cmdi-log4shell", C, 1, CRIT,
        r"\$\{\s*(?:jndi|env|sys|java|lower|upper|date|main|ctx|base64)\s*:|\$\{\s*(?:\$\{|::-)",
        "log4j lookups: ${jndi:ldap://..}",
        needs=("$",),
    ),
    _rule(
        "cmdi-command-at-end", C, 2, WARN,
        r"\s*" + _WEAK_CMDS + r"\s*(?:$|[;|&`])",
        "a separator then a bare command word at the end (also 'Black | cat')",
        starts=((";", ";"), ("|", r"\|"), ("`", "`"), ("&", "&&")),
    ),
    _rule(
        "cmdi-download", C, 2, WARN,
        r"\b(?:wget|curl)\s+(?:-\w+\s+)*(?:https?|ftp)://",
        "wget/curl of a URL",
        needs=("://",),
    ),
    _rule(
        "cmdi-redirect", C, 2, WARN,
        r">{1,2}\s*/(?:tmp|dev|var|etc)/|2>&1|\bchmod\s+(?:[0-7]{3,4}|\+x)\b",
        "shell redirections and chmod",
        needs=(">", "&", "chmod"),
    ),
    _rule(
        "cmdi-meta-chars", C, 3, NOTE,
        r"[;|`]|\$\(|&&",
        "any shell metacharacter",
        needs=(";", "|", "`", "$", "&"),
    ),
    # ------------------------------------------------------------------ scanners
    _rule(
        "scanner-user-agent", Category.SCANNER, 1, CRIT,
        r"\b(?:" + _SCANNERS + r")\b",
        "the User-Agent of a known attack or vulnerability scanning tool",
        UA_ONLY,
        needs=(),
    ),
    _rule(
        "scanner-generic-user-agent", Category.SCANNER, 2, WARN,
        r"\b(?:scanner|fuzz(?:er|ing)?|pentest\w*|exploit\w*|vulnerability|security\s+scan)\b",
        "a User-Agent that calls itself a scanner or fuzzer",
        UA_ONLY,
        needs=(),
    ),
    _rule(
        "scanner-probe-path", Category.SCANNER, 2, WARN,
        r"^/(?:wp-(?:admin|login|content|includes)|phpmyadmin|pma|cgi-bin)(?:/|$)"
        r"|^/(?:xmlrpc|wp-login)\.php",
        "paths scanners probe for (WordPress, phpMyAdmin, CGI)",
        frozenset({Target.PATH}),
        needs=("wp-", "phpmyadmin", "pma", "xmlrpc", "cgi-bin"),
    ),
    _rule(
        "scanner-scripting-user-agent", Category.SCANNER, 3, NOTE,
        r"^(?:python-requests|python-urllib|python-httpx|go-http-client|curl|wget|libwww-perl"
        r"|java/|okhttp|axios|node-fetch|aiohttp)",
        "a scripting library's default User-Agent (curl, httpx, locust too)",
        UA_ONLY,
        needs=(),
    ),
)
# fmt: on


def rules_for(target: Target, paranoia_level: int) -> tuple[Rule, ...]:
    return tuple(r for r in RULES if target in r.targets and r.paranoia <= paranoia_level)


def check_rules(rules: Iterable[Rule]) -> None:
    """Refuse rule data the engine cannot dispatch: a need that the trigger regex does not
    find as itself (not a token, or swallowed by a shorter token) would hide the rule."""
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ValueError(f"duplicate rule id {rule.id}")
        seen.add(rule.id)
        if not rule.needs and rule.targets != UA_ONLY:
            raise ValueError(f"{rule.id}: only User-Agent rules may run without needs")
        for need in rule.needs:
            if TRIGGER.findall(need)[:1] != [need]:
                raise ValueError(f"{rule.id}: {need!r} is not a trigger token")
        if {token for token, _ in rule.branches} != set(rule.needs):
            raise ValueError(f"{rule.id}: its branches and its needs differ")


check_rules(RULES)
