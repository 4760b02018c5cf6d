// Schemas and registration of the torch.ops.flash_mla operators, and the flash_mla._C module.
// This file defines the library and the dense decode operators; the other operators register
// their schemas in TORCH_LIBRARY_FRAGMENTs at the end of their own files (sparse_decode_op.cpp,
// sparse_prefill_op.cpp, kv_cache_ops.cpp), each naming the Python module of its fake
// implementations.
#include <torch/extension.h>
#include <torch/library.h>

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "ops.h"

namespace fb = flashmla::torch_binding;

TORCH_LIBRARY(flash_mla, m) {
  // The fake (meta) implementations used by torch.compile are registered by this module.
  m.set_python_module("flash_mla._ops");
  m.def(
      "get_decode_metadata(Tensor cache_seqlens, int rows_per_kv_head, int num_heads_kv, "
      "int page_block_size, int num_sms) -> (Tensor tile_scheduler_metadata, Tensor num_splits)");
  m.def(
      "dense_decode_fwd(Tensor q, Tensor k_cache, Tensor? block_table, Tensor cache_seqlens, "
      "int head_dim_v, Tensor tile_scheduler_metadata, Tensor num_splits, float softmax_scale, "
      "bool causal) -> (Tensor out, Tensor lse)");
}

TORCH_LIBRARY_IMPL(flash_mla, CUDA, m) {
  m.impl("get_decode_metadata", &fb::get_decode_metadata);
  m.impl("dense_decode_fwd", &fb::dense_decode_fwd);
}

// CPU tensors reach the same functions, which reject them with an error naming the argument
// (instead of the dispatcher's "could not run ... with arguments from the CPU backend").
TORCH_LIBRARY_IMPL(flash_mla, CPU, m) {
  m.impl("get_decode_metadata", &fb::get_decode_metadata);
  m.impl("dense_decode_fwd", &fb::dense_decode_fwd);
}

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif

// Importing flash_mla._C loads the library, which runs the registrations above. The module also
// exposes what the fake implementations need to predict output shapes.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flash_mla C++ extension: registers the torch.ops.flash_mla operators";
  m.attr("DECODE_METADATA_INTS") = flashmla::kDecodeMetadataInts;
  m.def(
      "decode_num_parts",
      [](int batch, int rows_per_kv_head, int num_heads_kv, int num_sms) {
        flashmla::DecodeScheduleShape shape;
        shape.batch = batch;
        shape.rows_per_kv_head = rows_per_kv_head;
        shape.num_heads_kv = num_heads_kv;
        shape.num_sms = num_sms;
        try {
          return flashmla::decode_num_parts(shape);
        } catch (const flashmla::Error& error) {
          throw pybind11::value_error(std::string("get_mla_metadata: ") + error.what());
        }
      },
      pybind11::arg("batch"), pybind11::arg("rows_per_kv_head"), pybind11::arg("num_heads_kv"),
      pybind11::arg("num_sms"),
      "Rows of tile_scheduler_metadata that get_decode_metadata returns for this shape.");
  m.def(
      "sparse_decode_num_parts",
      [](int batch, int seqlen_q, int num_heads_q, int num_sms) {
        flashmla::SparseDecodeScheduleShape shape;
        shape.batch = batch;
        shape.seqlen_q = seqlen_q;
        shape.num_heads_q = num_heads_q;
        shape.num_sms = num_sms;
        try {
          return flashmla::sparse_decode_num_parts(shape);
        } catch (const flashmla::Error& error) {
          throw pybind11::value_error(std::string("get_mla_metadata: ") + error.what());
        }
      },
      pybind11::arg("batch"), pybind11::arg("seqlen_q"), pybind11::arg("num_heads_q"),
      pybind11::arg("num_sms"),
      "Rows of tile_scheduler_metadata that get_sparse_decode_metadata returns for this shape.");
  m.def("read_error_record", &fb::read_error_record, pybind11::arg("device"),
        pybind11::arg("clear"),
        "The device error record after the current stream's work: (kind, operation, "
        "batch_index, position, value, limit, message); kind 0 = none.");
  m.def("clear_error_record", &fb::clear_error_record, pybind11::arg("device"),
        "Resets the device error record (ordered on the current stream).");
}
