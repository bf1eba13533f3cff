/* zergserve._nowait: a recv() that does not wait and says "nothing yet" with None.
 *
 * socket.recv(size, MSG_DONTWAIT) on an empty socket raises BlockingIOError, and making that
 * exception (an OSError subclass looked up by errno, its strerror decoded, a traceback) costs
 * some 10k instructions: more than a keep-alive request's parsing and environ together. A driver
 * whose client has not sent its next request yet meets it on most waits. This returns None
 * instead, and reads into a buffer of the module's, so a 64 KiB recv of a 40-byte request
 * allocates 40 bytes, not 64 KiB to shrink afterwards.
 *
 * Optional: without a compiler at install (or with ZERGSERVE_PURE_PYTHON=1) connection.py's
 * Python does the same with try/except. The recv never blocks, so the GIL is kept across it,
 * which also makes the shared buffer safe for a gthread worker's threads.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>

#define BUFFER_SIZE 65536

static char buffer[BUFFER_SIZE];

static PyObject *
nowait_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recv(sock, size, flags) takes 3 arguments");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear();  /* a closed socket's fileno() is -1: its recv says EBADF, and so does this */
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return NULL;
    }
    long flags = PyLong_AsLong(args[2]);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    if (size > BUFFER_SIZE)
        size = BUFFER_SIZE;  /* (a stream's recv may return less than asked; connection.py asks RECV at most) */
    ssize_t got;
    for (;;) {
        got = recv(fd, buffer, (size_t)size, (int)flags | MSG_DONTWAIT);
        if (got >= 0)
            return PyBytes_FromStringAndSize(buffer, got);
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

static PyMethodDef methods[] = {
    {"recv", (PyCFunction)(void (*)(void))nowait_recv, METH_FASTCALL,
     "recv(sock, size, flags) -> bytes | None: sock.recv(size, flags | MSG_DONTWAIT), None for nothing yet."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(module_doc, "A recv() that does not wait and returns None where socket.recv raises BlockingIOError.");

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_nowait", .m_doc = module_doc, .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__nowait(void)
{
    return PyModule_Create(&module);
}
