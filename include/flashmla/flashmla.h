// Umbrella header of the FlashMLA-compatible C++ core.
#pragma once

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "flashmla/dense_decode.h"
#include "flashmla/kv_cache_format.h"
#include "flashmla/kv_cache_tools.h"
#include "flashmla/sparse_decode.h"
#include "flashmla/sparse_prefill.h"
