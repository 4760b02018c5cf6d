// Umbrella header of the FlashMLA-compatible C++ core.
#pragma once

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"
#include "flashmla/dense_decode.h"
