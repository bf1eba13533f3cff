/* zergserve._rowwriter: scoreboard.RowWriter in C, the writes a worker makes to its own row.
 *
 * A request begins and ends with some ten stores into the shared row. Through memoryviews each
 * costs an item assignment and a boxed int, some 300 instructions: 4 to 5k per request, a tenth
 * of a request's whole cost on the uwsgi path. Here they are plain stores.
 *
 * The layout is scoreboard.py's (its _ROW, _HIST and the request line after them);
 * tests/test_scoreboard.py checks that both writers leave the same bytes after the same calls.
 * Optional: without a compiler at install (or with ZERGSERVE_PURE_PYTHON=1) the Python class
 * writes the row.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#define ROW_SIZE 384
#define OFF_STATUS 4
#define OFF_REQUESTS 8
#define OFF_EXCEPTIONS 16
#define OFF_TX 24
#define OFF_START 32
#define OFF_AVG 40
#define OFF_RUNNING 48
#define OFF_HEARTBEAT 56
#define OFF_HIST 72
#define N_BUCKETS 14
#define OFF_INFO (OFF_HIST + 8 * N_BUCKETS)
#define INFO_MAX 119
#define OFF_WS (OFF_INFO + 120)
#define OFF_CONNS (OFF_WS + 4)
#define IDLE 1
#define BUSY 2

static const double bounds[N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0};

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    char *row;
    unsigned long long requests, exceptions, tx, running;
    double avg_rt;
    unsigned long long buckets[N_BUCKETS];
} RowWriter;

static void put_u64(char *at, unsigned long long value) { uint64_t v = value; memcpy(at, &v, 8); }
static void put_f64(char *at, double value) { memcpy(at, &value, 8); }
static void put_i32(char *at, int value) { int32_t v = value; memcpy(at, &v, 4); }

/* The status last, released: a master that sees busy sees the request line and start too. */
static void put_status(RowWriter *self, int status) { __atomic_store_n((int32_t *)(self->row + OFF_STATUS), status, __ATOMIC_RELEASE); }

static double monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);  /* time.monotonic()'s clock */
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static int
RowWriter_init(RowWriter *self, PyObject *args, PyObject *kwds)
{
    PyObject *mem;
    Py_ssize_t base;
    if (!PyArg_ParseTuple(args, "On:RowWriter", &mem, &base))
        return -1;
    if (self->row != NULL) {
        PyErr_SetString(PyExc_TypeError, "RowWriter is set up once");
        return -1;
    }
    if (PyObject_GetBuffer(mem, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (base < 0 || base > self->view.len - ROW_SIZE || (base % 8) != 0) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "the row is not inside the table");
        return -1;
    }
    self->row = (char *)self->view.buf + base;
    return 0;
}

static void
RowWriter_dealloc(RowWriter *self)
{
    if (self->row != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ready(RowWriter *self)
{
    if (self->row == NULL) {
        PyErr_SetString(PyExc_ValueError, "RowWriter was not set up");
        return 0;
    }
    return 1;
}

static int
as_int(PyObject *arg, int *out)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return 0;
    if (value < INT32_MIN || value > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of the field's range");
        return 0;
    }
    *out = (int)value;
    return 1;
}

static int
as_double(PyObject *arg, double *out)
{
    *out = PyFloat_AsDouble(arg);
    return !(*out == -1.0 && PyErr_Occurred());
}

static void
show(RowWriter *self, PyObject *line)
{
    Py_ssize_t size = PyBytes_GET_SIZE(line);
    char *info = self->row + OFF_INFO;
    if (size < INFO_MAX) {
        memcpy(info, PyBytes_AS_STRING(line), size);
        info[size] = 0;
    } else {
        memcpy(info, PyBytes_AS_STRING(line), INFO_MAX);
    }
}

static PyObject *
RowWriter_show(RowWriter *self, PyObject *line)
{
    if (!ready(self))
        return NULL;
    if (!PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "the request line must be bytes");
        return NULL;
    }
    show(self, line);
    Py_RETURN_NONE;
}

static PyObject *
RowWriter_begin(RowWriter *self, PyObject *const *args, Py_ssize_t nargs)
{
    double now;
    if (!ready(self))
        return NULL;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "begin(request_line: bytes, now: float)");
        return NULL;
    }
    if (!as_double(args[1], &now))
        return NULL;
    show(self, args[0]);
    put_f64(self->row + OFF_START, now);
    put_status(self, BUSY);
    Py_RETURN_NONE;
}

static PyObject *
RowWriter_end(RowWriter *self, PyObject *const *args, Py_ssize_t nargs)
{
    double elapsed, busy_since = 0.0;
    if (!ready(self))
        return NULL;
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "end(sent, elapsed, failed[, busy_since])");
        return NULL;
    }
    unsigned long long sent = PyLong_AsUnsignedLongLong(args[0]);
    if (sent == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (!as_double(args[1], &elapsed))
        return NULL;
    int failed = PyObject_IsTrue(args[2]);
    if (failed < 0)
        return NULL;
    if (nargs == 4 && !as_double(args[3], &busy_since))
        return NULL;
    char *row = self->row;
    put_u64(row + OFF_REQUESTS, ++self->requests);
    self->tx += sent;
    put_u64(row + OFF_TX, self->tx);
    if (failed)
        put_u64(row + OFF_EXCEPTIONS, ++self->exceptions);
    double micros = elapsed * 1e6;
    self->avg_rt = self->requests == 1 ? micros : self->avg_rt + (micros - self->avg_rt) / 16;
    put_f64(row + OFF_AVG, self->avg_rt);
    self->running += (unsigned long long)(long long)micros;
    put_u64(row + OFF_RUNNING, self->running);
    int bucket = 0;
    while (bucket < N_BUCKETS && elapsed > bounds[bucket])
        bucket++;
    if (bucket < N_BUCKETS)
        put_u64(row + OFF_HIST + 8 * bucket, ++self->buckets[bucket]);
    put_f64(row + OFF_START, busy_since);
    put_status(self, busy_since != 0.0 ? BUSY : IDLE);
    Py_RETURN_NONE;
}

/* One of the row's 4-byte fields from a Python int. */
static PyObject *
store_int(RowWriter *self, PyObject *arg, int offset)
{
    int value;
    if (!ready(self) || !as_int(arg, &value))
        return NULL;
    put_i32(self->row + offset, value);
    Py_RETURN_NONE;
}

static PyObject *
RowWriter_write_status(RowWriter *self, PyObject *arg)
{
    return store_int(self, arg, OFF_STATUS);
}

static PyObject *
RowWriter_set_websockets(RowWriter *self, PyObject *arg)
{
    return store_int(self, arg, OFF_WS);
}

static PyObject *
RowWriter_set_connections(RowWriter *self, PyObject *arg)
{
    return store_int(self, arg, OFF_CONNS);
}

static PyObject *
RowWriter_set_status(RowWriter *self, PyObject *arg)
{
    PyObject *done = store_int(self, arg, OFF_STATUS);
    if (done != NULL)
        put_f64(self->row + OFF_HEARTBEAT, monotonic_now());
    return done;
}

static PyObject *
RowWriter_heartbeat(RowWriter *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    put_f64(self->row + OFF_HEARTBEAT, monotonic_now());
    Py_RETURN_NONE;
}

static PyObject *
RowWriter_get_buckets(RowWriter *self, void *closure)
{
    PyObject *list = PyList_New(N_BUCKETS);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < N_BUCKETS; i++) {
        PyObject *count = PyLong_FromUnsignedLongLong(self->buckets[i]);
        if (count == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, count);
    }
    return list;
}

static PyMemberDef RowWriter_members[] = {
    {"requests", T_ULONGLONG, offsetof(RowWriter, requests), READONLY, "requests ended"},
    {"exceptions", T_ULONGLONG, offsetof(RowWriter, exceptions), READONLY, "requests that failed (5xx)"},
    {"tx", T_ULONGLONG, offsetof(RowWriter, tx), READONLY, "bytes sent"},
    {"running", T_ULONGLONG, offsetof(RowWriter, running), READONLY, "microseconds in requests"},
    {"avg_rt", T_DOUBLE, offsetof(RowWriter, avg_rt), READONLY, "moving average of the response time (µs)"},
    {NULL},
};

static PyGetSetDef RowWriter_getset[] = {
    {"buckets", (getter)RowWriter_get_buckets, NULL, "the response-time histogram's counts", NULL},
    {NULL},
};

static PyMethodDef RowWriter_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))RowWriter_begin, METH_FASTCALL, "begin(request_line, now)"},
    {"end", (PyCFunction)(void (*)(void))RowWriter_end, METH_FASTCALL, "end(sent, elapsed, failed[, busy_since])"},
    {"show", (PyCFunction)RowWriter_show, METH_O, "show(request_line)"},
    {"set_status", (PyCFunction)RowWriter_set_status, METH_O, "set_status(status): and the heartbeat"},
    {"write_status", (PyCFunction)RowWriter_write_status, METH_O, "write_status(status): the status alone"},
    {"heartbeat", (PyCFunction)RowWriter_heartbeat, METH_NOARGS, "heartbeat()"},
    {"set_websockets", (PyCFunction)RowWriter_set_websockets, METH_O, "set_websockets(count)"},
    {"set_connections", (PyCFunction)RowWriter_set_connections, METH_O, "set_connections(count)"},
    {NULL},
};

static PyTypeObject RowWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zergserve._rowwriter.RowWriter",
    .tp_basicsize = sizeof(RowWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RowWriter(mem, base): a worker's writes to its scoreboard row (scoreboard.RowWriter in C).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowWriter_init,
    .tp_dealloc = (destructor)RowWriter_dealloc,
    .tp_methods = RowWriter_methods,
    .tp_members = RowWriter_members,
    .tp_getset = RowWriter_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_rowwriter", .m_doc = "scoreboard.RowWriter in C.", .m_size = -1,
};

PyMODINIT_FUNC
PyInit__rowwriter(void)
{
    if (PyType_Ready(&RowWriterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RowWriterType);
    if (PyModule_AddObject(m, "RowWriter", (PyObject *)&RowWriterType) < 0) {
        Py_DECREF(&RowWriterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
