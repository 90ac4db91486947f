#include "transport/base/stream_digest.h"

#include "xxhash.h"
#include "xxh_x86dispatch.h"

namespace migmover {

struct StreamDigest::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

StreamDigest::StreamDigest() : state_(new State) { XXH3_64bits_reset(state_->s); }
StreamDigest::~StreamDigest() = default;

void StreamDigest::Update(const void* data, size_t n) {
  XXH3_64bits_update_dispatch(state_->s, data, n);
  bytes_ += n;
}

void StreamDigest::Reset() {
  XXH3_64bits_reset(state_->s);
  bytes_ = 0;
}

uint64_t StreamDigest::Value() const { return XXH3_64bits_digest(state_->s); }

}  // namespace migmover
