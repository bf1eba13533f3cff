/* The uwsgi vars loop in C: the optional accelerator of zergserve/protocols/uwsgi.py.
 *
 * fast_vars(block, max_vars) is exactly uwsgi._fast_vars_py: a dict of latin-1 str for a vars
 * block that is well formed (every length inside the block, no empty key, at most max_vars
 * pairs, the last of a repeated key wins), None for anything else, so that the careful Python
 * parser names the fault. Only the fast path lives here; every error message stays in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
fast_vars(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t max_vars, pos = 0, count;
    PyObject *result, *key, *value;
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
    result = PyDict_New();
    if (result == NULL)
        goto fail;
    for (count = 0; count < max_vars && pos < view.len; count++) {
        Py_ssize_t klen, vlen, kstart;
        if (view.len - pos < 2)
            goto refuse;
        klen = data[pos] | data[pos + 1] << 8;
        kstart = pos + 2;
        if (klen == 0 || view.len - kstart < klen + 2)
            goto refuse;
        vlen = data[kstart + klen] | data[kstart + klen + 1] << 8;
        pos = kstart + klen + 2;
        if (view.len - pos < vlen)
            goto refuse;
        key = PyUnicode_DecodeLatin1((const char *)data + kstart, klen, NULL);
        if (key == NULL)
            goto fail;
        value = PyUnicode_DecodeLatin1((const char *)data + pos, vlen, NULL);
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
    if (pos != view.len)
        goto refuse;
    PyBuffer_Release(&view);
    return result;
refuse:
    Py_DECREF(result);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(result);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"fast_vars", (PyCFunction)(void (*)(void))fast_vars, METH_FASTCALL,
     "fast_vars(block, max_vars) -> dict | None: the vars of a well-formed block, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_uwsgi_speedups",
    "The uwsgi vars loop in C; zergserve.protocols.uwsgi falls back to Python without it.",
    0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__uwsgi_speedups(void)
{
    return PyModuleDef_Init(&module);
}
