/* An extension built against a NEWER header than the installed fastadagrad: its table has one
 * more field and the next version number. Importing it must raise a clean ImportError (built
 * by tests/test_c_header.py). */
#define PY_SSIZE_T_CLEAN
#include "fastadagrad/fastadagrad.h"

typedef struct FutureAPI {
    FastAdagradAPI current;
    void (*a_kernel_from_the_future)(void);
} FutureAPI;

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fa_c_future", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_fa_c_future(void)
{
    if (fastadagrad_import_api(FASTADAGRAD_ABI_VERSION + 1, sizeof(FutureAPI)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
