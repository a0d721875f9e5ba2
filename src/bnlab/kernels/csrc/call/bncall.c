/* bnlab's call module: a CPython extension that calls the native kernels (../bn.c, loaded by ctypes) through
 * their addresses, which bnlab/kernels/native.py passes first. A METH_FASTCALL function reads a call's ints,
 * floats and pointers in about 0.1 us; ctypes converts each argument through its argtypes, 1.5-2 us for the
 * kernels' 12 to 18 arguments, a share of a small call's time. Built only where Python's headers are
 * installed; without it native.py calls the same functions through ctypes.
 *
 * Each function takes the kernel's address, then the kernel's arguments in its order. Argument kinds: p a
 * pointer (an int, or None for NULL), q int64, i int, d double. The prototypes are bn.c's, with void * for the
 * data pointers (float or double: the same calling convention). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef union { void *p; int64_t q; int i; double d; } arg;

typedef int (*forward_fn)(void *, int64_t, int64_t, int64_t, int, void *, void *, double, int, void *, void *,
                          void *, int);
typedef int (*normalize_fn)(void *, int64_t, int64_t, int64_t, int, void *, void *, void *, void *, double,
                            void *, int);
typedef int (*backward_fn)(void *, void *, void *, int64_t, int64_t, int64_t, int, void *, void *, void *, double,
                           void *, double, int, void *, void *, void *, int);
typedef int (*running_fn)(void *, void *, void *, void *, int64_t, double, double);
typedef int (*stats64_fn)(void *, int64_t, int64_t, int64_t, int, void *, void *, int);

/* the kernel's address and its arguments of kinds sig (one char each) into a; 0 with a Python error set */
static int parse(PyObject *const *args, Py_ssize_t nargs, const char *sig, void **fn, arg *a) {
    const Py_ssize_t want = (Py_ssize_t)strlen(sig) + 1;
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "bnlab native call: %zd arguments given, %zd expected", nargs, want);
        return 0;
    }
    *fn = PyLong_AsVoidPtr(args[0]);
    for (Py_ssize_t k = 0; sig[k]; k++) {
        PyObject *o = args[k + 1];
        switch (sig[k]) {
        case 'p': a[k].p = o == Py_None ? NULL : PyLong_AsVoidPtr(o); break;
        case 'q': a[k].q = PyLong_AsLongLong(o); break;
        case 'i': a[k].i = (int)PyLong_AsLong(o); break;
        default: a[k].d = PyFloat_AsDouble(o); break;
        }
    }
    if (PyErr_Occurred()) return 0;
    if (*fn == NULL) {
        PyErr_SetString(PyExc_ValueError, "bnlab native call: no kernel address");
        return 0;
    }
    return 1;
}

#define SIG_FORWARD "pqqqippdipppi"
#define SIG_NORMALIZE "pqqqippppdpi"
#define SIG_BACKWARD "pppqqqipppdpdipppi"
#define SIG_RUNNING "ppppqdd"
#define SIG_STATS64 "pqqqippi"

static PyObject *call_forward(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *fn; arg a[16];
    if (!parse(args, nargs, SIG_FORWARD, &fn, a)) return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ((forward_fn)fn)(a[0].p, a[1].q, a[2].q, a[3].q, a[4].i, a[5].p, a[6].p, a[7].d, a[8].i, a[9].p, a[10].p,
                         a[11].p, a[12].i);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(r);
}

static PyObject *call_normalize(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *fn; arg a[16];
    if (!parse(args, nargs, SIG_NORMALIZE, &fn, a)) return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ((normalize_fn)fn)(a[0].p, a[1].q, a[2].q, a[3].q, a[4].i, a[5].p, a[6].p, a[7].p, a[8].p, a[9].d,
                           a[10].p, a[11].i);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(r);
}

static PyObject *call_backward(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *fn; arg a[20];
    if (!parse(args, nargs, SIG_BACKWARD, &fn, a)) return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ((backward_fn)fn)(a[0].p, a[1].p, a[2].p, a[3].q, a[4].q, a[5].q, a[6].i, a[7].p, a[8].p, a[9].p, a[10].d,
                          a[11].p, a[12].d, a[13].i, a[14].p, a[15].p, a[16].p, a[17].i);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(r);
}

static PyObject *call_running(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *fn; arg a[8];
    if (!parse(args, nargs, SIG_RUNNING, &fn, a)) return NULL;
    return PyLong_FromLong(((running_fn)fn)(a[0].p, a[1].p, a[2].p, a[3].p, a[4].q, a[5].d, a[6].d));
}

static PyObject *call_stats64(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    void *fn; arg a[8];
    if (!parse(args, nargs, SIG_STATS64, &fn, a)) return NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = ((stats64_fn)fn)(a[0].p, a[1].q, a[2].q, a[3].q, a[4].i, a[5].p, a[6].p, a[7].i);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(r);
}

static PyMethodDef methods[] = {
    {"forward", (PyCFunction)(void (*)(void))call_forward, METH_FASTCALL, "bn_forward_<f32|f64>"},
    {"normalize", (PyCFunction)(void (*)(void))call_normalize, METH_FASTCALL, "bn_normalize_<f32|f64>"},
    {"backward", (PyCFunction)(void (*)(void))call_backward, METH_FASTCALL, "bn_backward_<f32|f64>"},
    {"running", (PyCFunction)(void (*)(void))call_running, METH_FASTCALL, "bn_running_<f32|f64>"},
    {"stats64", (PyCFunction)(void (*)(void))call_stats64, METH_FASTCALL, "bn_stats64_<f32|f64>"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bnlab_call", "bnlab's native kernel calls", -1, methods};

PyMODINIT_FUNC PyInit__bnlab_call(void) { return PyModule_Create(&module); }
