// A C++ (pybind11) extension that calls fastadagrad's kernels through fastadagrad/fastadagrad.h
// (built by tests/test_c_header.py in a temporary directory).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "fastadagrad/fastadagrad.h"

namespace py = pybind11;

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

template <typename T>
static void dense(carray<T> param, carray<T> grad, carray<T> accum, double lr, double eps,
                  bool eps_inside, double weight_decay, double lr_decay, long long step,
                  bool maximize)
{
    if (grad.size() != param.size() || accum.size() != param.size())
        throw py::value_error("`grad` and `accum` must have the size of `param`");
    DenseOpts opts;
    FastAdagrad_API->options(&opts, lr, eps, eps_inside, weight_decay, lr_decay, step, maximize);
    T *p = param.mutable_data();   // throws if read-only
    T *a = accum.mutable_data();
    const T *g = grad.data();
    py::gil_scoped_release release;
    if constexpr (sizeof(T) == 4)
        FastAdagrad_API->dense_f32(param.size(), p, g, a, &opts);
    else
        FastAdagrad_API->dense_f64(param.size(), p, g, a, &opts);
}

template <typename T>
static Py_ssize_t sparse(carray<T> table, carray<T> accum, carray<int64_t> indices,
                         carray<T> grads, double lr, bool rowwise)
{
    DenseOpts opts;
    FastAdagrad_API->options(&opts, lr, 1e-10, 0, 0.0, 0.0, 1, 0);
    const Py_ssize_t d = table.ndim() == 2 ? table.shape(1) : 0;
    T *t = table.mutable_data();
    T *a = accum.mutable_data();
    py::gil_scoped_release release;
    if constexpr (sizeof(T) == 4)
        return FastAdagrad_API->sparse_f32(t, a, rowwise, d, indices.data(), indices.size(),
                                           grads.data(), &opts);
    else
        return FastAdagrad_API->sparse_f64(t, a, rowwise, d, indices.data(), indices.size(),
                                           grads.data(), &opts);
}

PYBIND11_MODULE(fa_pybind, m)
{
    if (fastadagrad_import() < 0)
        throw py::error_already_set();
    // noconvert: an in-place update must never run on a converted copy of the caller's array
    m.def("dense", &dense<float>, py::arg("param").noconvert(), py::arg("grad").noconvert(),
          py::arg("accum").noconvert(), py::arg("lr"), py::arg("eps"), py::arg("eps_inside"),
          py::arg("weight_decay"), py::arg("lr_decay"), py::arg("step"), py::arg("maximize"));
    m.def("dense", &dense<double>, py::arg("param").noconvert(), py::arg("grad").noconvert(),
          py::arg("accum").noconvert(), py::arg("lr"), py::arg("eps"), py::arg("eps_inside"),
          py::arg("weight_decay"), py::arg("lr_decay"), py::arg("step"), py::arg("maximize"));
    m.def("sparse", &sparse<float>, py::arg("table").noconvert(), py::arg("accum").noconvert(),
          py::arg("indices").noconvert(), py::arg("grads").noconvert(), py::arg("lr"),
          py::arg("rowwise"));
    m.def("sparse", &sparse<double>, py::arg("table").noconvert(), py::arg("accum").noconvert(),
          py::arg("indices").noconvert(), py::arg("grads").noconvert(), py::arg("lr"),
          py::arg("rowwise"));
    m.def("abi_version", [] { return FastAdagrad_API->abi_version; });
}
