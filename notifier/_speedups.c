/* notifier's hot loops, compiled: the per-line work of every syslog and TCP line received.
 * Each has a Python twin that runs where this was not built, and the tests hold the two to
 * the same results (tests/parse/test_syslog_fast.py, test_framing_fast.py, test_new_record.py).
 *
 * - `parse`: the RFC 3164 batch reader of notifier/ingest/parse/syslog.py (`parse_fast_3164`).
 * - `lines`: the bulk line split of notifier/ingest/parse/framing.py (`FrameDecoder._lines`).
 * - `ids`: the record ids of one batch (notifier/records.py, `new_record_ids`).
 * - `recv_burst`: the datagrams waiting on an IPv4 UDP socket, read with recvmmsg
 *   (notifier/ingest/udp.py, `UdpReceiver._on_readable`).
 *
 * `parse`:
 * It reads exactly what the Python loop reads, and builds the same Records: the lines of the
 * usual shape `<PRI>Mmm dd hh:mm:ss host tag[pid]: msg`, in ASCII, without control characters
 * and without an alarm in them. Every other line gives None, for the full parser to read, as
 * the Python loop does. The tests hold both to the reference parser (tests/parse/).
 *
 * What it leaves to Python, through the callables `configure` is given: the calendar
 * (`_Dates.of_stamp`, called once per distinct time stamp of a batch), the shared extras of a
 * process id, and whole lines with a byte above 0x7f (the Python loop reads those).
 *
 * The regular expression `_FAST_3164` is matched by hand. Its backtracking never changes the
 * outcome: each of its variable runs is followed by a character its own class excludes, so
 * the longest run is the only one that can match (the comments say which).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <errno.h>
#include <stdio.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

enum {
    F_KIND, F_RECEIVED_AT, F_SENDER, F_RECEIVER, F_RAW, F_TEXT, F_DEVICE, F_SERIAL, F_CODE,
    F_SEVERITY, F_SEVERITY_RAW, F_SOURCE, F_DETAILS, F_FACILITY, F_DEVICE_TIME, F_EXTRAS,
    F_ID, F_LABELS, N_FIELDS
};

static const char *const FIELD_NAMES[N_FIELDS] = {
    "kind", "received_at", "sender", "receiver", "raw", "text", "device", "serial", "code",
    "severity", "severity_raw", "source", "details", "facility", "device_time", "extras",
    "id", "labels",
};

#define N_PRI 192

/* What `configure` was given; one set per process (notifier has one interpreter). */
static struct {
    PyTypeObject *record_type;
    Py_ssize_t offsets[N_FIELDS];
    PyObject *kind_log;
    PyObject *by_pri[N_PRI]; /* (facility, severity, severity_raw) */
    PyObject *of_stamp;      /* (stamp: str, received_at: float) -> float | None */
    PyObject *procid_extras; /* (procid: str) -> Mapping */
    PyObject *procid_cache;  /* its cache: dict[str, Mapping] */
    PyObject *no_extras;
    PyObject *no_labels;
    PyObject *fallback; /* (data, sender, id, received_at, receiver) -> Record | None */
    PyObject *empty;
    int ready;
} S;

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
/* [\w.%:-] of the host, in ASCII */
static inline int is_host(unsigned char c) {
    return is_digit(c) || is_alpha(c) || c == '_' || c == '.' || c == '%' || c == ':' || c == '-';
}

static inline int is_tag(unsigned char c) { return c != ' ' && c != '[' && c != ']' && c != ':'; }
static inline int is_pid(unsigned char c) { return c != ']' && c != ' '; }
static inline int is_space(unsigned char c) { return c == ' '; }

/* How many characters from p[i] on are of the class `is`, counting at most `limit`. */
static inline Py_ssize_t run(const char *p, Py_ssize_t i, Py_ssize_t n, int (*is)(unsigned char),
                             Py_ssize_t limit) {
    Py_ssize_t j = i;
    while (j < n && j - i < limit && is((unsigned char)p[j])) j++;
    return j - i;
}

#define ANY PY_SSIZE_T_MAX

/* Where one line's fields are, when it has the fast shape. */
typedef struct {
    int pri;
    Py_ssize_t stamp, stamp_end, host, host_end, tag, tag_end, pid, pid_end, msg;
    int has_pid;
} Shape;

/* `_FAST_3164.match(line)` by hand; 1 when it matches. `p[0:n]` is ASCII without control
 * characters, so `\s` is the space and `\d`, `\w` are their ASCII classes. */
static int match_3164(const char *p, Py_ssize_t n, Shape *m) {
    Py_ssize_t i = 0, k;
    /* <(\d{1,3})> : a fourth digit is not '>' */
    if (n < 1 || p[0] != '<') return 0;
    k = run(p, 1, n, is_digit, ANY);
    if (k < 1 || k > 3 || 1 + k >= n || p[1 + k] != '>') return 0;
    /* `_BY_PRI` has str(v) for v < 192 only: "013" and "192" are for the full parser */
    if (k > 1 && p[1] == '0') return 0;
    m->pri = 0;
    for (Py_ssize_t j = 1; j <= k; j++) m->pri = m->pri * 10 + (p[j] - '0');
    if (m->pri >= N_PRI) return 0;
    i = 2 + k;
    /* ([A-Za-z]{3} {1,2}\d{1,2} \d{1,2}:\d{2}:\d{2}) then a space */
    m->stamp = i;
    if (run(p, i, n, is_alpha, 3) != 3) return 0;
    i += 3;
    k = run(p, i, n, is_space, ANY); /* a third space is not a digit */
    if (k < 1 || k > 2) return 0;
    i += k;
    k = run(p, i, n, is_digit, ANY); /* a third digit is not the space */
    if (k < 1 || k > 2 || i + k >= n || p[i + k] != ' ') return 0;
    i += k + 1;
    k = run(p, i, n, is_digit, ANY);
    if (k < 1 || k > 2 || i + k >= n || p[i + k] != ':') return 0;
    i += k + 1;
    if (run(p, i, n, is_digit, ANY) != 2 || i + 2 >= n || p[i + 2] != ':') return 0;
    i += 3;
    if (run(p, i, n, is_digit, ANY) != 2 || i + 2 >= n || p[i + 2] != ' ') return 0;
    m->stamp_end = i + 2;
    i += 3;
    /* (?!\d{4}[\s:]|UTC[\s:]|GMT[\s:]) */
    if (i + 4 < n && run(p, i, n, is_digit, 4) == 4 && (p[i + 4] == ' ' || p[i + 4] == ':'))
        return 0;
    if (i + 3 < n && (memcmp(p + i, "UTC", 3) == 0 || memcmp(p + i, "GMT", 3) == 0) &&
        (p[i + 3] == ' ' || p[i + 3] == ':'))
        return 0;
    /* ([\w.%:-]*[\w.%-]) then a space: the whole run (the class has no space), not ending ':' */
    m->host = i;
    k = run(p, i, n, is_host, ANY);
    if (k < 1 || p[i + k - 1] == ':' || i + k >= n || p[i + k] != ' ') return 0;
    m->host_end = i + k;
    i += k + 1;
    /* ([^\s\[\]:]{1,64}): the next character must be '[' or ':', which the run excludes */
    m->tag = i;
    k = run(p, i, n, is_tag, ANY);
    if (k < 1 || k > 64) return 0;
    m->tag_end = i + k;
    i += k;
    /* (?:\[([^\]\s]{0,32})\])? : without it, ':' would have to be where the '[' is */
    m->has_pid = 0;
    m->pid = m->pid_end = i;
    if (i < n && p[i] == '[') {
        k = run(p, i + 1, n, is_pid, ANY);
        if (k > 32 || i + 1 + k >= n || p[i + 1 + k] != ']') return 0;
        m->pid = i + 1;
        m->pid_end = i + 1 + k;
        m->has_pid = 1;
        i += k + 2;
    }
    /* :(?:\s|$) */
    if (i >= n || p[i] != ':') return 0;
    i++;
    if (i < n) {
        if (p[i] != ' ') return 0;
        i++;
    }
    m->msg = i;
    return 1;
}

static PyObject *ascii_str(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) memcpy(PyUnicode_DATA(s), p, (size_t)n);
    return s;
}

/* The str of p[0:n], the same object as last time when the text is the same: a read's lines
 * mostly come from one host and a few tags. */
typedef struct {
    const char *p;
    Py_ssize_t n;
    PyObject *value; /* a new reference; what `make` gave for p[0:n] */
} Memo;

static void memo_clear(Memo *memo) {
    Py_CLEAR(memo->value);
    memo->p = NULL;
    memo->n = -1;
}

static inline int memo_hit(Memo *memo, const char *p, Py_ssize_t n) {
    return memo->value != NULL && memo->n == n && memcmp(memo->p, p, (size_t)n) == 0;
}

static int memo_set(Memo *memo, const char *p, Py_ssize_t n, PyObject *value) {
    if (value == NULL) return -1;
    Py_XSETREF(memo->value, value);
    memo->p = p;
    memo->n = n;
    return 0;
}

static PyObject *memo_str(Memo *memo, const char *p, Py_ssize_t n) {
    if (!memo_hit(memo, p, n) && memo_set(memo, p, n, ascii_str(p, n)) < 0) return NULL;
    return memo->value;
}

static inline void set_field(PyObject *record, int field, PyObject *value) {
    PyObject **slot = (PyObject **)((char *)record + S.offsets[field]);
    Py_INCREF(value);
    *slot = value;
}

typedef struct {
    Memo host, tag, stamp, pid;
    PyObject *received_at, *receiver;
} Batch;

/* The Record of one ASCII line of the fast shape; Py_None (a new reference) when the line is
 * for the full parser; NULL on an error. The memos hold strs and results that the next lines
 * of the batch may reuse (pointers into `data`, which the caller keeps alive). */
static PyObject *read_line(Batch *b, PyObject *data, PyObject *sender, PyObject *id) {
    const char *p = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == '\0')) n--;
    for (Py_ssize_t j = 0; j < n; j++) {
        unsigned char c = (unsigned char)p[j];
        if (c < 0x20 || c >= 0x7f) { /* rare: decide what kind of line this is */
            for (Py_ssize_t k = j; k < n; k++)
                if ((unsigned char)p[k] & 0x80) /* not ASCII: the Python loop reads it */
                    return PyObject_CallFunctionObjArgs(S.fallback, data, sender, id,
                                                        b->received_at, b->receiver, NULL);
            Py_RETURN_NONE; /* a control character: for the full parser to count */
        }
    }
    Shape m;
    if (!match_3164(p, n, &m)) Py_RETURN_NONE;
    /* an alarm may be in the message: the full path reads it */
    if (memchr(p + m.msg, '<', (size_t)(n - m.msg)) != NULL) Py_RETURN_NONE;

    Py_ssize_t stamp_n = m.stamp_end - m.stamp;
    if (!memo_hit(&b->stamp, p + m.stamp, stamp_n)) {
        PyObject *stamp = ascii_str(p + m.stamp, stamp_n);
        if (stamp == NULL) return NULL;
        PyObject *t = PyObject_CallFunctionObjArgs(S.of_stamp, stamp, b->received_at, NULL);
        Py_DECREF(stamp);
        if (memo_set(&b->stamp, p + m.stamp, stamp_n, t) < 0) return NULL;
    }
    PyObject *device_time = b->stamp.value;
    if (device_time == Py_None) Py_RETURN_NONE; /* no such date: the lenient path decides */

    PyObject *extras = S.no_extras;
    Py_ssize_t pid_n = m.pid_end - m.pid;
    if (m.has_pid && pid_n > 0) {
        if (!memo_hit(&b->pid, p + m.pid, pid_n)) {
            PyObject *pid = ascii_str(p + m.pid, pid_n);
            if (pid == NULL) return NULL;
            /* `_procid_extras`'s own cache first: a call only for a process not seen yet */
            PyObject *found = PyDict_GetItemWithError(S.procid_cache, pid);
            if (found != NULL)
                Py_INCREF(found);
            else if (!PyErr_Occurred())
                found = PyObject_CallOneArg(S.procid_extras, pid);
            Py_DECREF(pid);
            if (memo_set(&b->pid, p + m.pid, pid_n, found) < 0) return NULL;
        }
        extras = b->pid.value;
    }
    PyObject *host = memo_str(&b->host, p + m.host, m.host_end - m.host);
    PyObject *tag = host == NULL ? NULL : memo_str(&b->tag, p + m.tag, m.tag_end - m.tag);
    PyObject *text = tag == NULL ? NULL : ascii_str(p + m.msg, n - m.msg);
    if (text == NULL) return NULL;
    PyObject *record = S.record_type->tp_alloc(S.record_type, 0);
    if (record == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *by_pri = S.by_pri[m.pri];
    set_field(record, F_KIND, S.kind_log);
    set_field(record, F_RECEIVED_AT, b->received_at);
    set_field(record, F_SENDER, sender);
    set_field(record, F_RECEIVER, b->receiver);
    set_field(record, F_RAW, data);
    set_field(record, F_TEXT, text);
    Py_DECREF(text);
    set_field(record, F_DEVICE, host);
    set_field(record, F_SERIAL, S.empty);
    set_field(record, F_CODE, S.empty);
    set_field(record, F_FACILITY, PyTuple_GET_ITEM(by_pri, 0));
    set_field(record, F_SEVERITY, PyTuple_GET_ITEM(by_pri, 1));
    set_field(record, F_SEVERITY_RAW, PyTuple_GET_ITEM(by_pri, 2));
    set_field(record, F_SOURCE, tag);
    set_field(record, F_DETAILS, S.empty);
    set_field(record, F_DEVICE_TIME, device_time);
    set_field(record, F_EXTRAS, extras);
    set_field(record, F_ID, id);
    set_field(record, F_LABELS, S.no_labels);
    return record;
}

PyDoc_STRVAR(parse_doc,
"parse(frames, ids, received_at, receiver) -> list[Record | None]\n\n"
"`parse_fast_3164` of notifier.ingest.parse.syslog, compiled: (message, sender) pairs of one\n"
"read, each as `parse_syslog` reads it when it has the usual shape, else None.");

static PyObject *parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!S.ready) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure() was not called");
        return NULL;
    }
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse(frames, ids, received_at, receiver)");
        return NULL;
    }
    /* Tuples, not the caller's lists: the callbacks below run Python code, and the frames
     * (and the bytes the memos point into) must stay as they are for the whole call. */
    PyObject *frames = PySequence_Tuple(args[0]);
    if (frames == NULL) return NULL;
    PyObject *ids = PySequence_Tuple(args[1]);
    if (ids == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(frames);
    PyObject *out = NULL;
    Batch b = {.received_at = args[2], .receiver = args[3]};
    memo_clear(&b.host);
    memo_clear(&b.tag);
    memo_clear(&b.stamp);
    memo_clear(&b.pid);
    if (PyTuple_GET_SIZE(ids) != count) {
        PyErr_SetString(PyExc_ValueError, "one id per frame");
        goto done;
    }
    if (!PyFloat_Check(b.received_at) || !PyUnicode_Check(b.receiver)) {
        PyErr_SetString(PyExc_TypeError, "received_at must be a float and receiver a str");
        goto done;
    }
    out = PyList_New(count);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *frame = PyTuple_GET_ITEM(frames, i);
        PyObject *id = PyTuple_GET_ITEM(ids, i);
        if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(frame, 0))) {
            PyErr_SetString(PyExc_TypeError, "each frame must be a (bytes, sender) pair");
            Py_CLEAR(out);
            goto done;
        }
        PyObject *data = PyTuple_GET_ITEM(frame, 0), *sender = PyTuple_GET_ITEM(frame, 1);
        PyObject *record = read_line(&b, data, sender, id);
        if (record == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, record);
    }
done:
    memo_clear(&b.host);
    memo_clear(&b.tag);
    memo_clear(&b.stamp);
    memo_clear(&b.pid);
    Py_DECREF(frames);
    Py_DECREF(ids);
    return out;
}

PyDoc_STRVAR(configure_doc,
"configure(record_type, kind_log, by_pri, of_stamp, procid_extras, procid_cache, no_extras,\n"
"          no_labels, fallback)\n\n"
"What `parse` builds with: the Record class (a slotted class; its slots are filled directly),\n"
"Kind.LOG, the 192 (facility, severity, severity_raw) of each PRI, the calendar, the extras\n"
"of a process id and the dict that function keeps them in, the extras and labels of a record\n"
"without any, and the Python reader of one line for lines with a byte above 0x7f.");

static PyObject *configure(PyObject *self, PyObject *args) {
    PyTypeObject *type;
    PyObject *kind_log, *by_pri, *of_stamp, *procid_extras, *procid_cache, *no_extras, *no_labels;
    PyObject *fallback;
    if (!PyArg_ParseTuple(args, "O!OO!OOO!OOO:configure", &PyType_Type, &type, &kind_log,
                          &PyTuple_Type, &by_pri, &of_stamp, &procid_extras, &PyDict_Type,
                          &procid_cache, &no_extras, &no_labels, &fallback))
        return NULL;
    if (PyTuple_GET_SIZE(by_pri) != N_PRI) {
        PyErr_SetString(PyExc_ValueError, "by_pri must have 192 entries");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < N_PRI; i++) {
        PyObject *item = PyTuple_GET_ITEM(by_pri, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_ValueError, "by_pri entries must be 3-tuples");
            return NULL;
        }
    }
    Py_ssize_t offsets[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        /* a slot's member descriptor knows where the slot is in the object */
        PyObject *d = PyDict_GetItemString(type->tp_dict, FIELD_NAMES[f]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, FIELD_NAMES[f]);
            return NULL;
        }
        offsets[f] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL) return NULL;
    S.ready = 0;
    Py_XSETREF(S.record_type, (PyTypeObject *)Py_NewRef(type));
    memcpy(S.offsets, offsets, sizeof offsets);
    Py_XSETREF(S.kind_log, Py_NewRef(kind_log));
    for (Py_ssize_t i = 0; i < N_PRI; i++)
        Py_XSETREF(S.by_pri[i], Py_NewRef(PyTuple_GET_ITEM(by_pri, i)));
    Py_XSETREF(S.of_stamp, Py_NewRef(of_stamp));
    Py_XSETREF(S.procid_extras, Py_NewRef(procid_extras));
    Py_XSETREF(S.procid_cache, Py_NewRef(procid_cache));
    Py_XSETREF(S.no_extras, Py_NewRef(no_extras));
    Py_XSETREF(S.no_labels, Py_NewRef(no_labels));
    Py_XSETREF(S.fallback, Py_NewRef(fallback));
    Py_XSETREF(S.empty, empty);
    S.ready = 1;
    Py_RETURN_NONE;
}

/* --- lines ---------------------------------------------------------------------------- */

static inline int is_delimiter(char c) { return c == '\n' || c == '\0'; }

/* `[0-9]{1,20} <` at p: the start of an octet-counted frame */
static int is_counted(const char *p, Py_ssize_t n) {
    Py_ssize_t k = run(p, 0, n, is_digit, ANY);
    return k >= 1 && k <= 20 && k + 1 < n && p[k] == ' ' && p[k + 1] == '<';
}

PyDoc_STRVAR(lines_doc,
"lines(buf, pos, last, octet_counting, max_frame_bytes) -> (list[bytes | None], int)\n\n"
"The lines of buf[pos:last] (`last` is a delimiter), as `FrameDecoder._lines` splits them:\n"
"each without its leading CRs and one trailing CR, None for one over the limit, blank ones\n"
"left out; it stops before a frame that may be octet-counted. Returns the lines and where\n"
"it stopped (last + 1 when it read them all).");

static PyObject *lines(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, last, limit;
    int counted;
    /* y*: any buffer (the decoder's bytearray), held until PyBuffer_Release */
    if (!PyArg_ParseTuple(args, "y*nnpn:lines", &view, &pos, &last, &counted, &limit))
        return NULL;
    PyObject *out = NULL, *result = NULL;
    if (pos < 0 || last < pos || last >= view.len) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= pos <= last < len(buf)");
        goto done;
    }
    const char *p = view.buf;
    out = PyList_New(0);
    if (out == NULL) goto done;
    Py_ssize_t at = pos;
    while (at <= last) {
        Py_ssize_t d = at;
        while (d < last && !is_delimiter(p[d])) d++;
        Py_ssize_t start = at;
        at = d + 1;
        while (start < d && p[start] == '\r') start++; /* blank bytes between frames */
        if (start == d) continue;
        if (counted && is_digit((unsigned char)p[start]) && is_counted(p + start, d - start)) {
            at = start; /* its frame may hold LFs: the decoder reads it by its count */
            break;
        }
        Py_ssize_t end = p[d - 1] == '\r' ? d - 1 : d; /* CR LF */
        PyObject *line = end - start > limit ? Py_NewRef(Py_None)
                                             : PyBytes_FromStringAndSize(p + start, end - start);
        if (line == NULL || PyList_Append(out, line) < 0) {
            Py_XDECREF(line);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(line);
    }
    result = Py_BuildValue("(Nn)", out, at);
    out = NULL;
done:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return result;
}

/* --- ids ------------------------------------------------------------------------------ */

PyDoc_STRVAR(ids_doc,
"ids(prefix, values) -> list[str]\n\n"
"prefix + the low 32 bits of each value as 8 lower-case hex digits: the ids of one batch.\n"
"`prefix` is ASCII.");

static PyObject *ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_IS_ASCII(args[0])) {
        PyErr_SetString(PyExc_TypeError, "ids(prefix: ASCII str, values)");
        return NULL;
    }
    static const char HEX[] = "0123456789abcdef";
    const char *prefix = (const char *)PyUnicode_DATA(args[0]);
    Py_ssize_t prefix_n = PyUnicode_GET_LENGTH(args[0]);
    PyObject *values = PySequence_Tuple(args[1]); /* `__index__` below may run Python code */
    if (values == NULL) return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(values);
    PyObject *out = PyList_New(count);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(values, i));
        PyObject *id = (v == (unsigned long long)-1 && PyErr_Occurred())
                           ? NULL
                           : PyUnicode_New(prefix_n + 8, 127);
        if (id == NULL) {
            Py_CLEAR(out);
            break;
        }
        char *d = (char *)PyUnicode_DATA(id);
        memcpy(d, prefix, (size_t)prefix_n);
        for (int k = 7; k >= 0; k--, v >>= 4) d[prefix_n + k] = HEX[v & 15];
        PyList_SET_ITEM(out, i, id);
    }
    Py_DECREF(values);
    return out;
}

/* --- recv_burst ----------------------------------------------------------------------- */

#ifdef __linux__ /* recvmmsg; elsewhere the module has no recv_burst and udp.py reads in Python */

#define RECV_VLEN 64       /* datagrams per recvmmsg call */
#define RECV_SIZE 65536    /* the largest UDP payload fits */

/* One set of buffers: only the event-loop thread reads, holding the GIL. Pages are touched
 * only as far as datagrams fill them. */
static char recv_bufs[RECV_VLEN][RECV_SIZE];

PyDoc_STRVAR(recv_burst_doc,
"recv_burst(fd, count) -> list[tuple[bytes, str]]\n\n"
"Up to `count` datagrams waiting on the IPv4 UDP socket `fd` (non-blocking), each with its\n"
"sender as \"a.b.c.d:port\", read `recvmmsg` 64 at a time. Raises OSError only when the\n"
"first read fails with something other than 'nothing waiting'.");

static PyObject *recv_burst(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "in:recv_burst", &fd, &count)) return NULL;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return NULL;
    }
    /* Refused before anything is read: what recvmmsg took from the kernel is never lost. */
    int domain = 0, type = 0;
    socklen_t size = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) < 0 ||
        (size = sizeof type, getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size)) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (domain != AF_INET || type != SOCK_DGRAM) {
        PyErr_SetString(PyExc_ValueError, "recv_burst reads IPv4 UDP sockets only");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    struct mmsghdr msgs[RECV_VLEN];
    struct iovec iovs[RECV_VLEN];
    struct sockaddr_in names[RECV_VLEN];
    struct sockaddr_in last_name;
    PyObject *last_sender = NULL;
    while (PyList_GET_SIZE(out) < count) {
        unsigned int vlen = (unsigned int)Py_MIN(RECV_VLEN, count - PyList_GET_SIZE(out));
        memset(msgs, 0, sizeof(msgs[0]) * vlen);
        for (unsigned int i = 0; i < vlen; i++) {
            iovs[i].iov_base = recv_bufs[i];
            iovs[i].iov_len = RECV_SIZE;
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
        }
        int got = recvmmsg(fd, msgs, vlen, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            if (PyList_GET_SIZE(out) > 0) break; /* the error shows on the next read */
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        for (int i = 0; i < got; i++) {
            struct sockaddr_in *name = &names[i];
            if (msgs[i].msg_hdr.msg_namelen < sizeof(struct sockaddr_in)) {
                PyErr_SetString(PyExc_ValueError, "recv_burst: a datagram without its sender");
                goto fail;
            }
            if (last_sender == NULL || name->sin_port != last_name.sin_port ||
                name->sin_addr.s_addr != last_name.sin_addr.s_addr) {
                char host[INET_ADDRSTRLEN], text[INET_ADDRSTRLEN + 8];
                if (name->sin_family != AF_INET ||
                    inet_ntop(AF_INET, &name->sin_addr, host, sizeof host) == NULL) {
                    PyErr_SetString(PyExc_ValueError, "recv_burst reads IPv4 sockets only");
                    goto fail;
                }
                snprintf(text, sizeof text, "%s:%u", host, (unsigned)ntohs(name->sin_port));
                Py_XSETREF(last_sender, PyUnicode_FromString(text));
                if (last_sender == NULL) goto fail;
                last_name = *name;
            }
            PyObject *item = Py_BuildValue("(y#O)", recv_bufs[i], (Py_ssize_t)msgs[i].msg_len,
                                           last_sender);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
        if ((unsigned int)got < vlen) break; /* nothing more waiting */
    }
    Py_XDECREF(last_sender);
    return out;
fail:
    Py_XDECREF(last_sender);
    Py_DECREF(out);
    return NULL;
}
#endif

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL, parse_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {"lines", lines, METH_VARARGS, lines_doc},
    {"ids", (PyCFunction)(void (*)(void))ids, METH_FASTCALL, ids_doc},
#ifdef __linux__
    {"recv_burst", recv_burst, METH_VARARGS, recv_burst_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_speedups",
    .m_doc = "notifier's hot loops, compiled (see _speedups.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* The Record fields `parse` fills: notifier checks them against Record's before use. */
    PyObject *names = PyTuple_New(N_FIELDS);
    for (int f = 0; names != NULL && f < N_FIELDS; f++) {
        PyObject *name = PyUnicode_FromString(FIELD_NAMES[f]);
        if (name == NULL) Py_CLEAR(names);
        else PyTuple_SET_ITEM(names, f, name);
    }
    if (names == NULL || PyModule_AddObject(m, "RECORD_FIELDS", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
