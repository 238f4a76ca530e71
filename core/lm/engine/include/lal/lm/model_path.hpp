// lal::lm — where a model lives: a directory, or a Hugging Face hub id resolved in the local cache only.
//
// `resolve_model_path("org/name")` looks in $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub, for models--org--name/snapshots/<rev>, where <rev> is refs/main (or the only
// snapshot). Nothing is downloaded; a missing model throws std::runtime_error saying where it looked and how to get
// it. Torch-free, thread-safe (reads the environment).
#pragma once

#include <string>

namespace lal::lm {

std::string resolve_model_path(const std::string& path_or_hub_id);

}  // namespace lal::lm
