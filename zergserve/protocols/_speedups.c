/* The codecs' optional accelerator in C: the common cases of zergserve/protocols/uwsgi.py and
 * zergserve/protocols/http.py, each of which falls back to its own Python without it (no compiler
 * at install, or ZERGSERVE_PURE_PYTHON=1). Only fast paths live here: whatever a function does
 * not take, it answers None for, and the Python parses it and names the fault.
 *
 * fast_vars(block, max_vars) is exactly uwsgi._fast_vars_py: (a dict of latin-1 str, whether a
 * name is reserved) for a vars block that is well formed (every length inside the block, no empty
 * key, at most max_vars pairs, the last of a repeated key wins), None for anything else. The dict
 * has room for VARS_ROOM more keys, so that a copy the WSGI environ is built on needs no resize.
 *
 * fast_head(head, limits[, cls]) reads a complete request head in one forward pass (no backtracking):
 * exactly the syntax of http._HEAD (a token method, SP, a target of \x21-\x7e, SP, HTTP/1.0 or
 * HTTP/1.1, CRLF, field lines `token:value` with a value of HTAB, SP, VCHAR or obs-text, each
 * ending in CRLF, then CRLF), the field split (names lowercased, values stripped of SP and HTAB)
 * and the special fields _parse_head reads. It returns the 11 fields of an http.Request (a tuple,
 * or an instance of cls, a tuple subclass: the Request itself) for an origin-form head within the
 * limits that _parse_head would accept, and None for anything else:
 * a fault, a limit, absolute-form, `*`, CONNECT, an unusual Content-Length or Transfer-Encoding.
 *
 * fast_fields(headers) is the response header loop of HTTPConnection.send_response.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* --- uwsgi: the vars loop ------------------------------------------------------------------- */

/* Names that come again and again, as interned str: a known name costs a table probe instead of a
 * new str and its hash, and the environ's and the scope's lookups of it compare pointers. Any other
 * name is made as before. One table holds uwsgi var names (matched exactly), one HTTP field names
 * (matched ignoring ASCII case, returned lowercase). */
#define NAME_SLOTS 128  /* a power of two, over twice the names of a table */
struct names {
    const char *const *text;
    int count;
    int fold;  /* match ignoring ASCII case (the text is lowercase) */
    PyObject *str[NAME_SLOTS / 2];
    signed char slot[NAME_SLOTS];  /* an index into str, -1 for an empty slot */
};

#define LOWER(c) ((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))

static const char *const var_text[] = {
    "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "REQUEST_URI", "PATH_INFO",
    "DOCUMENT_ROOT", "SERVER_PROTOCOL", "REQUEST_SCHEME", "HTTPS", "REMOTE_ADDR", "REMOTE_PORT",
    "SERVER_ADDR", "SERVER_PORT", "SERVER_NAME", "SCRIPT_NAME", "UWSGI_SCHEME", "HTTP_HOST",
    "HTTP_USER_AGENT", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING", "HTTP_ACCEPT_LANGUAGE", "HTTP_CONNECTION",
    "HTTP_COOKIE", "HTTP_REFERER", "HTTP_CACHE_CONTROL", "HTTP_UPGRADE_INSECURE_REQUESTS",
    "HTTP_AUTHORIZATION", "HTTP_ORIGIN", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_REAL_IP", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_PRAGMA",
    "HTTP_SEC_FETCH_SITE", "HTTP_SEC_FETCH_MODE", "HTTP_SEC_FETCH_DEST", "HTTP_DNT", "HTTP_X_REQUESTED_WITH",
};
static const char *const field_text[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-type",
    "content-length", "transfer-encoding", "expect", "upgrade", "te", "cookie", "referer", "cache-control",
    "upgrade-insecure-requests", "authorization", "origin", "x-forwarded-for", "x-forwarded-proto",
    "x-real-ip", "forwarded", "if-none-match", "if-modified-since", "pragma", "sec-fetch-site",
    "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user", "dnt", "x-requested-with", "keep-alive",
};
static const char *const method_text[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
static struct names request_methods = {method_text, (int)(sizeof(method_text) / sizeof(method_text[0])), 0, {0}, {0}};
static PyObject *version_11, *version_10;  /* Request.http_version */
static struct names vars = {var_text, (int)(sizeof(var_text) / sizeof(var_text[0])), 0, {0}, {0}};
static struct names fields = {field_text, (int)(sizeof(field_text) / sizeof(field_text[0])), 1, {0}, {0}};

static unsigned int
name_hash(const unsigned char *name, Py_ssize_t len)
{
    return ((unsigned int)len * 31u + LOWER(name[0]) * 7u + LOWER(name[len - 1]) * 3u + LOWER(name[len / 2]))
           & (NAME_SLOTS - 1);
}

static int
init_names(struct names *table)
{
    int i;
    memset(table->slot, -1, sizeof(table->slot));
    for (i = 0; i < table->count; i++) {
        Py_ssize_t len = (Py_ssize_t)strlen(table->text[i]);
        unsigned int slot = name_hash((const unsigned char *)table->text[i], len);
        table->str[i] = PyUnicode_InternFromString(table->text[i]);
        if (table->str[i] == NULL)
            return -1;
        while (table->slot[slot] >= 0)
            slot = (slot + 1) & (NAME_SLOTS - 1);
        table->slot[slot] = (signed char)i;
    }
    return 0;
}

/* A new reference to the known str for name[0:len], or NULL (no error set) if it is not known. */
static PyObject *
known_name(struct names *table, const unsigned char *name, Py_ssize_t len)
{
    unsigned int slot = name_hash(name, len);
    int i;
    while ((i = table->slot[slot]) >= 0) {
        PyObject *candidate = table->str[i];
        if (PyUnicode_GET_LENGTH(candidate) == len) {
            const Py_UCS1 *text = PyUnicode_1BYTE_DATA(candidate);
            Py_ssize_t k = 0;
            if (table->fold)
                while (k < len && LOWER(name[k]) == text[k])
                    k++;
            else if (memcmp(text, name, len) == 0)
                k = len;
            if (k == len)
                return Py_NewRef(candidate);
        }
        slot = (slot + 1) & (NAME_SLOTS - 1);
    }
    return NULL;
}

static PyObject *
var_name(const unsigned char *name, Py_ssize_t len)
{
    PyObject *known = known_name(&vars, name, len);
    return known != NULL ? known : PyUnicode_DecodeLatin1((const char *)name, len, NULL);
}

/* Values that come again and again (the method, the protocol, the scheme, the server's name, port
 * and document root, the client's address, Host, User-Agent): the str made for a short value is
 * kept in a slot of a direct-mapped cache, and a later value of the same bytes takes a reference to
 * it instead of a new str, and is not freed with its environ. A value whose slot holds another is
 * made as before and takes the slot: the cache follows what the requests send, and holds at most
 * VALUE_SLOTS short strings, each made by PyUnicode_DecodeLatin1 (one byte a character, compared as
 * bytes). Longer values (queries, cookies) are made each time. */
#define VALUE_SLOTS 256  /* a power of two */
#define VALUE_MAX 48
static PyObject *value_cache[VALUE_SLOTS];

static PyObject *
var_value(const unsigned char *value, Py_ssize_t len)
{
    unsigned int hash = 2166136261u;  /* FNV-1a */
    Py_ssize_t i;
    PyObject **slot, *made;
    if (len <= 1 || len > VALUE_MAX)  /* CPython keeps "" and the one-character strings already */
        return PyUnicode_DecodeLatin1((const char *)value, len, NULL);
    for (i = 0; i < len; i++)
        hash = (hash ^ value[i]) * 16777619u;
    slot = &value_cache[(hash ^ (hash >> 16)) & (VALUE_SLOTS - 1)];
    if (*slot != NULL && PyUnicode_GET_LENGTH(*slot) == len && memcmp(PyUnicode_1BYTE_DATA(*slot), value, len) == 0)
        return Py_NewRef(*slot);
    made = PyUnicode_DecodeLatin1((const char *)value, len, NULL);
    if (made != NULL)
        Py_XSETREF(*slot, Py_NewRef(made));
    return made;
}

/* Room left in a vars dict for the keys a server adds to a copy of it (the WSGI environ adds a dozen). */
#define VARS_ROOM 16

/* uWSGI's magic vars (UWSGI_*) and names of the WSGI server's own keys (wsgi.*), which the environ
 * must not take from a packet: uwsgi.RESERVED_PREFIXES. */
static int
reserved_name(const unsigned char *name, Py_ssize_t len)
{
    return (len >= 6 && memcmp(name, "UWSGI_", 6) == 0) || (len >= 5 && memcmp(name, "wsgi.", 5) == 0);
}

static PyObject *
fast_vars(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t max_vars, pos = 0, count;
    PyObject *result = NULL, *key, *value, *pair;
    int reserved = 0;
    const unsigned char *data;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fast_vars(block, max_vars) takes 2 arguments");
        return NULL;
    }
    max_vars = PyNumber_AsSsize_t(args[1], NULL);  /* clamps like range() would accept any int */
    if (max_vars == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    data = (const unsigned char *)view.buf;
    /* First the lengths alone: a malformed block is refused before anything is made, and the
     * dict is made at its final size. */
    for (count = 0; count < max_vars && pos < view.len; count++) {
        Py_ssize_t klen, vlen;
        if (view.len - pos < 2)
            goto refuse;
        klen = data[pos] | data[pos + 1] << 8;
        pos += 2;
        if (klen == 0 || view.len - pos < klen + 2)
            goto refuse;
        pos += klen;
        vlen = data[pos] | data[pos + 1] << 8;
        pos += 2;
        if (view.len - pos < vlen)
            goto refuse;
        pos += vlen;
    }
    if (pos != view.len)
        goto refuse;
    result = _PyDict_NewPresized(count + VARS_ROOM);
    if (result == NULL)
        goto fail;
    for (pos = 0; pos < view.len;) {
        Py_ssize_t klen = data[pos] | data[pos + 1] << 8, vlen;
        reserved = reserved || reserved_name(data + pos + 2, klen);
        key = var_name(data + pos + 2, klen);
        if (key == NULL)
            goto fail;
        pos += 2 + klen;
        vlen = data[pos] | data[pos + 1] << 8;
        pos += 2;
        value = var_value(data + pos, vlen);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        pos += vlen;
        if (PyDict_SetItem(result, key, value) < 0) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto fail;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    PyBuffer_Release(&view);
    pair = PyTuple_Pack(2, result, reserved ? Py_True : Py_False);
    Py_DECREF(result);
    return pair;
refuse:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(result);
    PyBuffer_Release(&view);
    return NULL;
}


/* --- HTTP: the request head gate and the response's fields ---------------------------------- */
/* RFC 9110 tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
static unsigned char is_tchar[256];

static void
init_tchar(void)
{
    const char *extra = "!#$%&'*+-.^_`|~";
    int c;
    for (c = '0'; c <= '9'; c++)
        is_tchar[c] = 1;
    for (c = 'a'; c <= 'z'; c++)
        is_tchar[c] = is_tchar[c - 'a' + 'A'] = 1;
    for (; *extra; extra++)
        is_tchar[(unsigned char)*extra] = 1;
}

/* A field value byte: HTAB, SP, VCHAR or obs-text (no CTL but HTAB, no DEL). */
#define IS_VALUE(c) ((c) == '\t' || ((c) >= 0x20 && (c) != 0x7f))
/* Whether data[0:len] equals the lowercase ASCII word, ignoring ASCII case. No latin-1 letter
 * lowercases to ASCII, so this is Python's value.lower() == word. */
static int
equals_lower(const unsigned char *data, Py_ssize_t len, const char *word)
{
    Py_ssize_t i;
    if (len != (Py_ssize_t)strlen(word))
        return 0;
    for (i = 0; i < len; i++)
        if (LOWER(data[i]) != (unsigned char)word[i])
            return 0;
    return 1;
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* The Connection value's comma-separated tokens, stripped of SP and HTAB, set *close or *keep. */
static void
connection_tokens(const unsigned char *data, Py_ssize_t len, int *close, int *keep)
{
    Py_ssize_t start = 0, end, a, b;
    while (start <= len) {
        for (end = start; end < len && data[end] != ','; end++)
            ;
        a = start;
        b = end;
        while (a < b && is_blank(data[a]))
            a++;
        while (b > a && is_blank(data[b - 1]))
            b--;
        if (equals_lower(data + a, b - a, "close"))
            *close = 1;
        else if (equals_lower(data + a, b - a, "keep-alive"))
            *keep = 1;
        start = end + 1;
    }
}

static PyObject *
latin1(const unsigned char *data, Py_ssize_t len)
{
    return PyUnicode_DecodeLatin1((const char *)data, len, NULL);
}

/* A lowercase str of an ASCII token (the interned one of a common field name). */
static PyObject *
lower_name(const unsigned char *data, Py_ssize_t len)
{
    PyObject *name = known_name(&fields, data, len);
    Py_UCS1 *out;
    Py_ssize_t i;
    if (name != NULL)
        return name;
    name = PyUnicode_New(len, 127);
    if (name == NULL)
        return NULL;
    out = PyUnicode_1BYTE_DATA(name);
    for (i = 0; i < len; i++)
        out[i] = LOWER(data[i]);
    return name;
}

/* One limit of the Limits tuple as a C size (huge ints clamp, as comparisons with them would); 0
 * with no error set for what is no int. */
static int
get_limit(PyObject *limits, Py_ssize_t index, Py_ssize_t *out)
{
    PyObject *limit = PyTuple_GET_ITEM(limits, index);
    if (!PyLong_Check(limit))
        return 0;
    *out = PyNumber_AsSsize_t(limit, NULL);
    return 1;
}

/* A framing field: how often it came, and its last value (pointing into the head). */
typedef struct {
    int count;
    const unsigned char *value;
    Py_ssize_t len;
} Framing;

/* What the special fields said. */
typedef struct {
    int hosts, types, expect, close, keep, upgrade;
    Framing length, coding;
} Specials;

static void
seen(Framing *field, const unsigned char *value, Py_ssize_t len)
{
    field->count++;
    field->value = value;
    field->len = len;
}

/* Note a field whose lowercase name is `name` (the 7 names have 7 lengths). */
static void
note_special(Specials *s, const Py_UCS1 *name, Py_ssize_t name_len, const unsigned char *value, Py_ssize_t len)
{
    switch (name_len) {
    case 14:
        if (memcmp(name, "content-length", 14) == 0)
            seen(&s->length, value, len);
        break;
    case 17:
        if (memcmp(name, "transfer-encoding", 17) == 0)
            seen(&s->coding, value, len);
        break;
    case 4:
        if (memcmp(name, "host", 4) == 0)
            s->hosts++;
        break;
    case 12:
        if (memcmp(name, "content-type", 12) == 0)
            s->types++;
        break;
    case 6:
        if (memcmp(name, "expect", 6) == 0)
            s->expect = equals_lower(value, len, "100-continue");
        break;
    case 10:
        if (memcmp(name, "connection", 10) == 0)
            connection_tokens(value, len, &s->close, &s->keep);
        break;
    case 7:
        if (memcmp(name, "upgrade", 7) == 0)
            s->upgrade = 1;
        break;
    }
}

/* The head's fields from `pos` (just after the request line's CRLF) as (name, value) pairs
 * appended to `headers`: 1 when the head ends right after them, 0 to refuse, -1 on error. */
static int
read_fields(const unsigned char *data, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t max_fields,
            Py_ssize_t field_size, PyObject *headers, Specials *s)
{
    Py_ssize_t count = 0;
    while (len - pos >= 2 && !(data[pos] == '\r' && data[pos + 1] == '\n')) {
        Py_ssize_t start = pos, colon, vstart, vend, end;
        PyObject *name, *value, *pair;
        while (pos < len && is_tchar[data[pos]])
            pos++;
        if (pos == start || pos == len || data[pos] != ':')
            return 0;
        colon = pos++;
        while (pos < len && IS_VALUE(data[pos]))
            pos++;
        if (len - pos < 2 || data[pos] != '\r' || data[pos + 1] != '\n')
            return 0;
        end = pos;
        pos += 2;
        if (++count > max_fields || end - start + 2 > field_size)
            return 0;
        vstart = colon + 1;
        vend = end;
        while (vstart < vend && is_blank(data[vstart]))
            vstart++;
        while (vend > vstart && is_blank(data[vend - 1]))
            vend--;
        name = lower_name(data + start, colon - start);
        if (name == NULL)
            return -1;
        value = latin1(data + vstart, vend - vstart);
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        note_special(s, PyUnicode_1BYTE_DATA(name), colon - start, data + vstart, vend - vstart);
        pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            return -1;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        if (PyList_Append(headers, pair) < 0) {
            Py_DECREF(pair);
            return -1;
        }
        Py_DECREF(pair);
    }
    return len - pos == 2;  /* the final CRLF ends the head */
}

/* The Content-Length to report: -1 for none, -2 to refuse (what _parse_head raises on). */
static long long
content_length(const Specials *s, int http11)
{
    long long length = 0;
    Py_ssize_t i;
    if (s->coding.count) {
        if (s->length.count || !http11 || s->coding.count > 1
            || !equals_lower(s->coding.value, s->coding.len, "chunked"))
            return -2;
    }
    if (!s->length.count)
        return -1;
    if (s->length.count > 1 || s->length.len == 0 || s->length.len > 18)
        return -2;
    for (i = 0; i < s->length.len; i++) {
        if (s->length.value[i] < '0' || s->length.value[i] > '9')
            return -2;
        length = length * 10 + (s->length.value[i] - '0');
    }
    return length;
}

static PyObject *
parse_head(const unsigned char *data, Py_ssize_t len, PyObject *limits, PyTypeObject *cls)
{
    Py_ssize_t pos = 0, method_end, target_start, target_end, line_end, question;
    Py_ssize_t max_line, max_fields, field_size, max_head;
    PyObject *headers = NULL, *result = NULL;
    Specials s = {0};
    long long length;
    int http11, found;

    /* anything but a tuple of 4 ints is the Python's to judge */
    if (!PyTuple_Check(limits) || PyTuple_GET_SIZE(limits) < 4 || !get_limit(limits, 0, &max_line)
            || !get_limit(limits, 1, &max_fields) || !get_limit(limits, 2, &field_size)
            || !get_limit(limits, 3, &max_head))
        Py_RETURN_NONE;
    if (len > max_head)
        goto refuse;
    /* The request line: method SP target SP HTTP/1.x CRLF. */
    while (pos < len && is_tchar[data[pos]])
        pos++;
    method_end = pos;
    if (method_end == 0 || pos == len || data[pos] != ' ')
        goto refuse;
    target_start = ++pos;
    while (pos < len && data[pos] >= 0x21 && data[pos] <= 0x7e)
        pos++;
    target_end = pos;
    if (target_end == target_start || len - pos < 11 || memcmp(data + pos, " HTTP/1.", 8) != 0
            || (data[pos + 8] != '0' && data[pos + 8] != '1') || data[pos + 9] != '\r' || data[pos + 10] != '\n')
        goto refuse;
    http11 = data[pos + 8] == '1';
    line_end = pos + 9;
    if (line_end > max_line || data[target_start] != '/'
            || (method_end == 7 && memcmp(data, "CONNECT", 7) == 0))
        goto refuse;
    headers = PyList_New(0);
    if (headers == NULL)
        return NULL;
    found = read_fields(data, len, line_end + 2, max_fields, field_size, headers, &s);
    if (found < 0)
        goto fail;
    if (!found || s.hosts > 1 || (http11 && s.hosts != 1) || s.types > 1)
        goto refuse;
    length = content_length(&s, http11);
    if (length == -2)
        goto refuse;
    for (question = target_start; question < target_end && data[question] != '?'; question++)
        ;
    {
        Py_ssize_t i, after = question + (question < target_end);
        PyObject *method = known_name(&request_methods, data, method_end);
        PyObject *target = latin1(data + target_start, target_end - target_start);
        PyObject *items[11] = {
            method != NULL ? method : latin1(data, method_end),
            target,
            question == target_end && target != NULL ? Py_NewRef(target)
                                                     : latin1(data + target_start, question - target_start),
            latin1(data + after, target_end - after),
            Py_NewRef(http11 ? version_11 : version_10),
            Py_NewRef(headers),
            length < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(length),
            PyBool_FromLong(s.coding.count),
            PyBool_FromLong(s.expect && http11),
            PyBool_FromLong(http11 ? !s.close : s.keep && !s.close),
            PyBool_FromLong(s.upgrade),
        };
        result = cls == &PyTuple_Type ? PyTuple_New(11) : cls->tp_alloc(cls, 11);
        for (i = 0; i < 11; i++) {
            if (items[i] == NULL || result == NULL) {
                Py_CLEAR(result);
                Py_XDECREF(items[i]);
            } else
                PyTuple_SET_ITEM(result, i, items[i]);
        }
    }
    Py_DECREF(headers);
    return result;
refuse:
    Py_XDECREF(headers);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(headers);
    return NULL;
}

static int
get_cls(PyObject *arg, PyTypeObject **cls)
{
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a subclass of tuple");
        return 0;
    }
    *cls = (PyTypeObject *)arg;
    return 1;
}

static PyObject *
fast_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    PyTypeObject *cls = &PyTuple_Type;  /* what to make: a tuple, or the Request class (a NamedTuple) */
    PyObject *result;

    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "fast_head(head, limits[, cls]) takes 2 or 3 arguments");
        return NULL;
    }
    if (nargs == 3 && !get_cls(args[2], &cls))
        return NULL;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    result = parse_head((const unsigned char *)view.buf, view.len, args[1], cls);
    PyBuffer_Release(&view);
    return result;
}

/* The head at the start of a connection's buffer, found and read in one call: the codec's usual
 * step between requests, which otherwise slices, searches and copies in Python first. None for
 * anything else (no complete head yet, empty lines before it, a head parse_head leaves to the
 * Python), which the Python then reads as before. */
static PyObject *
fast_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyTypeObject *cls;
    Py_ssize_t pos, len;
    const char *data, *end;
    PyObject *request, *result;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "fast_request(buf, pos, limits, cls) takes 4 arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "fast_request(): buf must be bytes");
        return NULL;
    }
    if (!get_cls(args[3], &cls))
        return NULL;
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    len = PyBytes_GET_SIZE(args[0]);
    data = PyBytes_AS_STRING(args[0]);
    if (pos < 0 || len - pos < 4 || (data[pos] == '\r' && data[pos + 1] == '\n'))
        Py_RETURN_NONE;
    end = memmem(data + pos, len - pos, "\r\n\r\n", 4);
    if (end == NULL)
        Py_RETURN_NONE;
    request = parse_head((const unsigned char *)data + pos, end + 4 - (data + pos), args[2], cls);
    if (request == NULL || request == Py_None)
        return request;
    result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(request);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, request);
    PyTuple_SET_ITEM(result, 1, PyLong_FromSsize_t(end + 4 - data));
    if (PyTuple_GET_ITEM(result, 1) == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

/* The response header fields of HTTPConnection.send_response (its loop over the app's headers,
 * which the adapters validated): each (name, value) of bytes written as "name: value\r\n",
 * except Content-Length (written once; a repeat with the same value dropped), Transfer-Encoding
 * and Keep-Alive (dropped: the framing is the codec's) and Connection (dropped, a "close" in it
 * noted); Date and Server are noted as present. */
enum { FIELD_OTHER, FIELD_LENGTH, FIELD_DROP, FIELD_CONNECTION, FIELD_DATE, FIELD_SERVER };

static int
response_field(const unsigned char *name, Py_ssize_t len)
{
    switch (len) {
    case 4:
        return equals_lower(name, len, "date") ? FIELD_DATE : FIELD_OTHER;
    case 6:
        return equals_lower(name, len, "server") ? FIELD_SERVER : FIELD_OTHER;
    case 10:
        if (equals_lower(name, len, "connection"))
            return FIELD_CONNECTION;
        return equals_lower(name, len, "keep-alive") ? FIELD_DROP : FIELD_OTHER;
    case 14:
        return equals_lower(name, len, "content-length") ? FIELD_LENGTH : FIELD_OTHER;
    case 17:
        return equals_lower(name, len, "transfer-encoding") ? FIELD_DROP : FIELD_OTHER;
    }
    return FIELD_OTHER;
}

/* Whether "close" occurs in data[0:len], ignoring ASCII case (Python's b"close" in value.lower()). */
static int
has_close(const unsigned char *data, Py_ssize_t len)
{
    Py_ssize_t i;
    for (i = 0; i + 5 <= len; i++)
        if (LOWER(data[i]) == 'c' && equals_lower(data + i, 5, "close"))
            return 1;
    return 0;
}

/* fast_fields(headers) -> (block, length, close, have_date, have_server) | None: the fields above
 * as one bytes block, the Content-Length (None without one) and the three flags. None for anything
 * else, where the Python loop raises what it raises: headers that are not a list of 2-tuples of
 * bytes, a Content-Length that is not 1 to 18 ASCII digits or that differs from an earlier one. */
static PyObject *
fast_fields(PyObject *self, PyObject *headers)
{
    Py_ssize_t count, i, size = 0;
    long long length = -1;
    int close = 0, have_date = 0, have_server = 0, length_written = 0;
    PyObject *block, *length_obj, *result;
    char *out;

    if (!PyList_CheckExact(headers))
        Py_RETURN_NONE;
    count = PyList_GET_SIZE(headers);
    for (i = 0; i < count; i++) {  /* check and measure; nothing below calls back into Python */
        PyObject *item = PyList_GET_ITEM(headers, i), *name, *value;
        const unsigned char *v;
        Py_ssize_t vlen, j;
        long long number = 0;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            Py_RETURN_NONE;
        name = PyTuple_GET_ITEM(item, 0);
        value = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value))
            Py_RETURN_NONE;
        v = (const unsigned char *)PyBytes_AS_STRING(value);
        vlen = PyBytes_GET_SIZE(value);
        switch (response_field((const unsigned char *)PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))) {
        case FIELD_LENGTH:
            if (vlen < 1 || vlen > 18)
                Py_RETURN_NONE;
            for (j = 0; j < vlen; j++) {
                if (v[j] < '0' || v[j] > '9')
                    Py_RETURN_NONE;
                number = number * 10 + (v[j] - '0');
            }
            if (length >= 0) {
                if (number != length)
                    Py_RETURN_NONE;
                continue;  /* the same length again: written once */
            }
            length = number;
            break;
        case FIELD_DROP:
            continue;
        case FIELD_CONNECTION:
            close = close || has_close(v, vlen);
            continue;
        case FIELD_DATE:
            have_date = 1;
            break;
        case FIELD_SERVER:
            have_server = 1;
            break;
        }
        size += PyBytes_GET_SIZE(name) + vlen + 4;
    }
    block = PyBytes_FromStringAndSize(NULL, size);
    if (block == NULL)
        return NULL;
    out = PyBytes_AS_STRING(block);
    for (i = 0; i < count; i++) {  /* the same walk, writing */
        PyObject *item = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t nlen = PyBytes_GET_SIZE(name), vlen = PyBytes_GET_SIZE(value);
        int kind = response_field((const unsigned char *)PyBytes_AS_STRING(name), nlen);
        if (kind == FIELD_DROP || kind == FIELD_CONNECTION)
            continue;
        if (kind == FIELD_LENGTH) {
            if (length_written)
                continue;
            length_written = 1;
        }
        memcpy(out, PyBytes_AS_STRING(name), nlen);
        out += nlen;
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, PyBytes_AS_STRING(value), vlen);
        out += vlen;
        *out++ = '\r';
        *out++ = '\n';
    }
    if (length >= 0) {
        length_obj = PyLong_FromLongLong(length);
        if (length_obj == NULL) {
            Py_DECREF(block);
            return NULL;
        }
    }
    else {
        length_obj = Py_None;
        Py_INCREF(Py_None);
    }
    result = PyTuple_Pack(5, block, length_obj, close ? Py_True : Py_False, have_date ? Py_True : Py_False,
                          have_server ? Py_True : Py_False);
    Py_DECREF(block);
    Py_DECREF(length_obj);
    return result;
}

static PyMethodDef methods[] = {
    {"fast_vars", (PyCFunction)(void (*)(void))fast_vars, METH_FASTCALL,
     "fast_vars(block, max_vars) -> (dict, bool) | None: the vars of a well-formed block and whether a name is reserved, else None."},
    {"fast_head", (PyCFunction)(void (*)(void))fast_head, METH_FASTCALL,
     "fast_head(head, limits[, cls]) -> tuple | None: the Request fields of a common valid head (as a cls), else None."},
    {"fast_request", (PyCFunction)(void (*)(void))fast_request, METH_FASTCALL,
     "fast_request(buf, pos, limits, cls) -> (request, end) | None: fast_head of the head that starts at buf[pos], found there."},
    {"fast_fields", (PyCFunction)fast_fields, METH_O,
     "fast_fields(headers) -> tuple | None: a response's header block, Content-Length and flags, else None."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc, "The codecs' common cases in C; zergserve.protocols.uwsgi and .http fall back to Python.");

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_speedups", .m_doc = module_doc, .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_tchar();
    if (init_names(&vars) < 0 || init_names(&fields) < 0 || init_names(&request_methods) < 0)
        return NULL;
    version_11 = PyUnicode_InternFromString("1.1");
    version_10 = PyUnicode_InternFromString("1.0");
    if (version_11 == NULL || version_10 == NULL)
        return NULL;
    return PyModule_Create(&module);
}
