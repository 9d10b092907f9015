/* An extension built against an OLDER, smaller table: it declares only a prefix of
 * FastAdagradAPI (version, size, options, dense_f32), as a header that had only those fields
 * would have, and asks for exactly that much. Against the current, larger table it must still
 * import and give the same bytes (built by tests/test_c_header.py). */
#define PY_SSIZE_T_CLEAN
#include "fastadagrad/fastadagrad.h"

typedef struct OldAPI {
    uint32_t abi_version;
    uint32_t size;
    void (*options)(DenseOpts *opts, double lr, double eps, int eps_inside, double weight_decay,
                    double lr_decay, long long step, int maximize);
    void (*dense_f32)(Py_ssize_t n, float *param, const float *grad, float *accum,
                      const DenseOpts *opts);
} OldAPI;

static const OldAPI *old_api = NULL;

/* dense_f32(param, grad, accum, lr): float32 C-contiguous buffers of one size. */
static PyObject *dense_f32(PyObject *self, PyObject *args)
{
    Py_buffer p, g, a;
    double lr;
    DenseOpts opts;
    if (!PyArg_ParseTuple(args, "w*y*w*d", &p, &g, &a, &lr))
        return NULL;
    old_api->options(&opts, lr, 1e-10, 0, 0.0, 0.0, 1, 0);
    old_api->dense_f32(p.len / 4, (float *)p.buf, (const float *)g.buf, (float *)a.buf, &opts);
    PyBuffer_Release(&p); PyBuffer_Release(&g); PyBuffer_Release(&a);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"dense_f32", dense_f32, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fa_c_old", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fa_c_old(void)
{
    old_api = (const OldAPI *)fastadagrad_import_api(1, sizeof(OldAPI));
    if (old_api == NULL)
        return NULL;
    return PyModule_Create(&module);
}
