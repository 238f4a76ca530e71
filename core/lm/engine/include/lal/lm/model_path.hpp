// lal::lm — where a model lives: a directory, or a Hugging Face hub id (`org/name[@revision]`), downloaded into the
// shared Hugging Face cache on first use. The engine, `lal distill` and every command resolve models through this
// one function, which is lal::hub::resolve_model_path (see lal/hub/hub.hpp for the cache layout, environment
// variables and errors). Torch-free.
#pragma once

#include "lal/hub/hub.hpp"

namespace lal::lm {

using lal::hub::resolve_model_config;
using lal::hub::resolve_model_path;

}  // namespace lal::lm
