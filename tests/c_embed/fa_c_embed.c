/* A plain C-API extension that calls fastadagrad's kernels through fastadagrad/fastadagrad.h
 * (built by tests/test_c_header.py in a temporary directory). Arrays come in through the buffer
 * protocol; the checks here are the minimum the test needs, not a model of validation. */
#define PY_SSIZE_T_CLEAN
#include "fastadagrad/fastadagrad.h"

/* A writable (or read-only) C-contiguous buffer of float32 ('f') or float64 ('d'). */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->format == NULL || (strcmp(view->format, "f") != 0 && strcmp(view->format, "d") != 0)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "float32 or float64 buffers only");
        return -1;
    }
    return 0;
}

static int is_f32(const Py_buffer *view) { return view->format[0] == 'f'; }

/* dense(param, grad, accum, lr, eps, eps_inside, weight_decay, lr_decay, step, maximize) */
static PyObject *dense(PyObject *self, PyObject *args)
{
    PyObject *po, *go, *ao;
    double lr, eps, wd, lr_decay;
    int inside, maximize;
    long long step;
    Py_buffer p, g, a;
    DenseOpts opts;
    if (!PyArg_ParseTuple(args, "OOOddpddLp", &po, &go, &ao, &lr, &eps, &inside, &wd, &lr_decay,
                          &step, &maximize))
        return NULL;
    if (get_buffer(po, &p, 1) < 0) return NULL;
    if (get_buffer(go, &g, 0) < 0) { PyBuffer_Release(&p); return NULL; }
    if (get_buffer(ao, &a, 1) < 0) { PyBuffer_Release(&p); PyBuffer_Release(&g); return NULL; }
    FastAdagrad_API->options(&opts, lr, eps, inside, wd, lr_decay, step, maximize);
    Py_BEGIN_ALLOW_THREADS
    if (is_f32(&p))
        FastAdagrad_API->dense_f32(p.len / 4, (float *)p.buf, (const float *)g.buf, (float *)a.buf, &opts);
    else
        FastAdagrad_API->dense_f64(p.len / 8, (double *)p.buf, (const double *)g.buf, (double *)a.buf, &opts);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&p); PyBuffer_Release(&g); PyBuffer_Release(&a);
    Py_RETURN_NONE;
}

#define MAX_ARRAYS 8

/* multi(params, grads, accums, lr): -1 after updating every array in one call, or the index of
 * the first grad holding NaN/inf (then nothing is written). Lists of equal length <= 8. */
static PyObject *multi(PyObject *self, PyObject *args)
{
    PyObject *lists[3];
    double lr;
    Py_buffer views[3][MAX_ARRAYS];
    void *ptrs[3][MAX_ARRAYS];
    Py_ssize_t offsets[MAX_ARRAYS + 1], k, i, j, bad = -1, got = 0;
    DenseOpts opts;
    int f32 = 1, failed = 0;
    if (!PyArg_ParseTuple(args, "O!O!O!d", &PyList_Type, &lists[0], &PyList_Type, &lists[1],
                          &PyList_Type, &lists[2], &lr))
        return NULL;
    k = PyList_GET_SIZE(lists[0]);
    if (k > MAX_ARRAYS || PyList_GET_SIZE(lists[1]) != k || PyList_GET_SIZE(lists[2]) != k) {
        PyErr_SetString(PyExc_ValueError, "three lists of the same length <= 8");
        return NULL;
    }
    offsets[0] = 0;
    for (i = 0; i < k && !failed; i++) {
        for (j = 0; j < 3; j++) {
            if (get_buffer(PyList_GET_ITEM(lists[j], i), &views[j][i], j != 1) < 0) { failed = 1; break; }
            got++;
            ptrs[j][i] = views[j][i].buf;
        }
        if (!failed) {
            f32 = is_f32(&views[0][i]);
            offsets[i + 1] = offsets[i] + views[0][i].len / views[0][i].itemsize;
        }
    }
    if (!failed) {
        FastAdagrad_API->options(&opts, lr, 1e-10, 0, 0.0, 0.0, 1, 0);
        Py_BEGIN_ALLOW_THREADS
        if (f32) {
            bad = FastAdagrad_API->first_nonfinite_f32(k, (float **)ptrs[1], offsets);
            if (bad < 0)
                FastAdagrad_API->multi_f32(k, (float **)ptrs[0], (float **)ptrs[1], (float **)ptrs[2], offsets, &opts);
        } else {
            bad = FastAdagrad_API->first_nonfinite_f64(k, (double **)ptrs[1], offsets);
            if (bad < 0)
                FastAdagrad_API->multi_f64(k, (double **)ptrs[0], (double **)ptrs[1], (double **)ptrs[2], offsets, &opts);
        }
        Py_END_ALLOW_THREADS
    }
    for (i = 0; i < got; i++)
        PyBuffer_Release(&views[i % 3][i / 3]);
    return failed ? NULL : PyLong_FromSsize_t(bad);
}

/* sparse(table, accum, indices (int64), grads, lr, rowwise): the number of unique rows. */
static PyObject *sparse(PyObject *self, PyObject *args)
{
    PyObject *to, *ao, *io, *go;
    double lr;
    int rowwise;
    Py_buffer t, a, idx, g;
    Py_ssize_t b, d, unique;
    DenseOpts opts;
    if (!PyArg_ParseTuple(args, "OOOOdp", &to, &ao, &io, &go, &lr, &rowwise))
        return NULL;
    if (PyObject_GetBuffer(io, &idx, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (get_buffer(to, &t, 1) < 0) { PyBuffer_Release(&idx); return NULL; }
    if (get_buffer(ao, &a, 1) < 0) { PyBuffer_Release(&idx); PyBuffer_Release(&t); return NULL; }
    if (get_buffer(go, &g, 0) < 0) {
        PyBuffer_Release(&idx); PyBuffer_Release(&t); PyBuffer_Release(&a); return NULL;
    }
    b = idx.len / 8;
    d = b ? g.len / g.itemsize / b : 0;
    FastAdagrad_API->options(&opts, lr, 1e-10, 0, 0.0, 0.0, 1, 0);
    if (is_f32(&t))
        unique = FastAdagrad_API->sparse_f32((float *)t.buf, (float *)a.buf, rowwise, d,
                                             (const int64_t *)idx.buf, b, (const float *)g.buf, &opts);
    else
        unique = FastAdagrad_API->sparse_f64((double *)t.buf, (double *)a.buf, rowwise, d,
                                             (const int64_t *)idx.buf, b, (const double *)g.buf, &opts);
    PyBuffer_Release(&idx); PyBuffer_Release(&t); PyBuffer_Release(&a); PyBuffer_Release(&g);
    return PyLong_FromSsize_t(unique);
}

/* mixed16(param (2-byte storage), grad (float32), accum (float32), bf16, lr[, seed, step]): one
 * mixed step (dense_mixed); with seed and step, the param's store rounded stochastically
 * (dense_mixed_sr, index0 = 0). */
static PyObject *mixed16(PyObject *self, PyObject *args)
{
    PyObject *po, *go, *ao, *seed_o = NULL;
    int bf16;
    double lr;
    long long step = 1;
    unsigned long long seed = 0;
    Py_buffer p, g, a;
    MixedTypes types;
    DenseOpts opts;
    if (!PyArg_ParseTuple(args, "OOOpd|OL", &po, &go, &ao, &bf16, &lr, &seed_o, &step))
        return NULL;
    if (seed_o && (seed = PyLong_AsUnsignedLongLong(seed_o)) == (unsigned long long)-1
            && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(po, &p, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    if (get_buffer(go, &g, 0) < 0) { PyBuffer_Release(&p); return NULL; }
    if (get_buffer(ao, &a, 1) < 0) { PyBuffer_Release(&p); PyBuffer_Release(&g); return NULL; }
    types.param = bf16 ? FA_DT_BF16 : FA_DT_F16;
    types.grad = FA_DT_F32;
    types.accum = FA_DT_F32;
    FastAdagrad_API->options(&opts, lr, 1e-10, 0, 0.0, 0.0, step, 0);
    if (seed_o)
        FastAdagrad_API->dense_mixed_sr(p.len / 2, p.buf, g.buf, a.buf, NULL, &types, &opts,
                                        (uint64_t)seed, step, 0);
    else
        FastAdagrad_API->dense_mixed(p.len / 2, p.buf, g.buf, a.buf, NULL, &types, &opts);
    PyBuffer_Release(&p); PyBuffer_Release(&g); PyBuffer_Release(&a);
    Py_RETURN_NONE;
}

static PyObject *abi(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(IIn)", (unsigned int)FastAdagrad_API->abi_version,
                         (unsigned int)FastAdagrad_API->size, (Py_ssize_t)sizeof(FastAdagradAPI));
}

static PyMethodDef methods[] = {
    {"dense", dense, METH_VARARGS, NULL},
    {"multi", multi, METH_VARARGS, NULL},
    {"sparse", sparse, METH_VARARGS, NULL},
    {"mixed16", mixed16, METH_VARARGS, NULL},
    {"abi", abi, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fa_c_embed", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fa_c_embed(void)
{
    if (fastadagrad_import() < 0)
        return NULL;
    return PyModule_Create(&module);
}
