#include "daemon/device/sim/sim_device_spec.h"

#include <cerrno>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "daemon/device/sim/sim_content_image.h"
#include "daemon/device/sim/sim_stream.h"
#include "transport/base/errno_status.h"

namespace migmover::sim {

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  struct Unit {
    const char* suffix;
    uint64_t mult;
  };
  static constexpr Unit kUnits[] = {{"kib", 1ull << 10}, {"mib", 1ull << 20}, {"gib", 1ull << 30},
                                    {"tib", 1ull << 40}, {"kb", 1000ull},     {"mb", 1000000ull},
                                    {"gb", 1000000000ull}, {"k", 1ull << 10}, {"m", 1ull << 20},
                                    {"g", 1ull << 30},   {"b", 1}};
  uint64_t mult = 1;
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(t, u.suffix)) {
      mult = u.mult;
      t.resize(t.size() - std::strlen(u.suffix));
      break;
    }
  }
  uint64_t v = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a byte size (examples: 4096, 64KiB, 1GiB, 10MB)"));
  }
  if (v != 0 && mult > std::numeric_limits<uint64_t>::max() / v) {
    return absl::InvalidArgumentError(absl::StrCat("byte size '", text, "' overflows"));
  }
  return v * mult;
}

absl::Status SimDeviceSpec::Validate() const {
  if (!features.stop_copy()) {
    return absl::InvalidArgumentError("simulated device: features must include stop_copy");
  }
  if (state_size == 0 || state_size > kMaxStateSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("simulated device: size ", state_size, " out of range (1 B .. 1 TiB)"));
  }
  if (chunk_size < 64 || chunk_size > kMaxChunkSize || chunk_size % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "simulated device: chunk ", chunk_size, " must be a multiple of 8 in 64 B .. 1 MiB"));
  }
  if (content == Content::kImage &&
      (save_fd != SaveFd::kPipe || short_io ||
       corrupt_at != std::numeric_limits<uint64_t>::max())) {
    return absl::InvalidArgumentError(
        "simulated device: content=image serves a pipe from a prepared image: it cannot be "
        "combined with save_fd=file, short_io or corrupt_at");
  }
  if (fail_arc && (fail_errno <= 0 || fail_errno > 4095)) {
    return absl::InvalidArgumentError(absl::StrCat("simulated device: bad errno ", fail_errno));
  }
  return absl::OkStatus();
}

uint64_t SimDeviceSpec::BookkeepingBytes() const {
  const uint64_t chunks = (state_size + chunk_size - 1) / chunk_size;
  // Model: uint32 generation + sent and dirty bits; a saving or resuming session copies the
  // generations; one chunk buffer per direction; a fixed part for the driver's objects.
  const uint64_t image =
      content == Content::kImage ? SimContentImage::ImageBytes(state_size, chunk_size) : 0;
  return chunks * sizeof(uint32_t) * 2 + (chunks + 3) / 4 + 2ull * chunk_size + (64u << 10) +
         image;
}

std::string SimDeviceSpec::ToString() const {
  std::string s = absl::StrCat("size=", state_size, ",chunk=", chunk_size, ",seed=", seed,
                               ",dirty_rate=", dirty_rate, ",features=",
                               absl::StrReplaceAll(features.ToString(), {{",", "+"}}));
  if (initial_bytes != std::numeric_limits<uint64_t>::max()) {
    absl::StrAppend(&s, ",initial=", initial_bytes);
  }
  if (short_io) absl::StrAppend(&s, ",short_io=1");
  if (save_fd == SaveFd::kFile) absl::StrAppend(&s, ",save_fd=file");
  if (content == Content::kImage) absl::StrAppend(&s, ",content=image");
  if (fail_arc) {
    absl::StrAppend(&s, ",fail_arc=", MigStateName(fail_from), ":", MigStateName(fail_to), ":",
                    ErrnoName(fail_errno), fail_to_error ? ":error" : "");
  }
  if (corrupt_at != std::numeric_limits<uint64_t>::max()) {
    absl::StrAppend(&s, ",corrupt_at=", corrupt_at);
  }
  if (commit_delay_ms != 0) absl::StrAppend(&s, ",commit_delay_ms=", commit_delay_ms);
  if (!data_size) absl::StrAppend(&s, ",data_size=off");
  if (resume_stall_ms != 0) absl::StrAppend(&s, ",stall=", resume_stall_at, ":", resume_stall_ms);
  return s;
}

namespace {
absl::StatusOr<int> ParseErrno(absl::string_view name) {
  int v = 0;
  if (absl::SimpleAtoi(name, &v)) return v;
  std::string upper = absl::AsciiStrToUpper(name);
  for (int e = 1; e < 134; ++e) {
    if (ErrnoName(e) == upper) return e;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown errno '", name, "'"));
}
}  // namespace

absl::StatusOr<SimDeviceSpec> ParseSimDeviceSpec(absl::string_view text) {
  SimDeviceSpec spec;
  for (absl::string_view kv : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(p.first));
    absl::string_view value = absl::StripAsciiWhitespace(p.second);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("simulated device spec: ", key, "=", value, ": ", why));
    };
    if (key == "size" || key == "chunk" || key == "initial" || key == "dirty_rate") {
      auto v = ParseByteSize(value);
      if (!v.ok()) return bad(v.status().message());
      if (key == "size") spec.state_size = *v;
      if (key == "chunk") {
        if (*v > kMaxChunkSize) return bad("at most 1MiB");
        spec.chunk_size = static_cast<uint32_t>(*v);
      }
      if (key == "initial") spec.initial_bytes = *v;
      if (key == "dirty_rate") spec.dirty_rate = *v;
    } else if (key == "seed" || key == "corrupt_at") {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) return bad("not a number");
      (key == "seed" ? spec.seed : spec.corrupt_at) = v;
    } else if (key == "features") {
      auto f = ParseMigFeatures(absl::StrReplaceAll(value, {{"+", ","}}));
      if (!f.ok()) return bad(f.status().message());
      spec.features = *f;
    } else if (key == "commit_delay_ms") {
      uint32_t v;
      if (!absl::SimpleAtoi(value, &v) || v > 600'000) return bad("expected 0..600000");
      spec.commit_delay_ms = v;
    } else if (key == "stall") {
      std::vector<std::string> parts = absl::StrSplit(value, ':');
      if (parts.size() != 2) return bad("expected BYTES:MS");
      auto at = ParseByteSize(parts[0]);
      uint32_t ms;
      if (!at.ok()) return bad(at.status().message());
      if (!absl::SimpleAtoi(parts[1], &ms) || ms == 0 || ms > 600'000) {
        return bad("expected 1..600000 milliseconds");
      }
      spec.resume_stall_at = *at;
      spec.resume_stall_ms = ms;
    } else if (key == "data_size") {
      if (value != "on" && value != "off") return bad("expected on or off");
      spec.data_size = value == "on";
    } else if (key == "short_io") {
      if (value != "0" && value != "1") return bad("expected 0 or 1");
      spec.short_io = value == "1";
    } else if (key == "save_fd") {
      if (value != "pipe" && value != "file") return bad("expected pipe or file");
      spec.save_fd = value == "file" ? SimDeviceSpec::SaveFd::kFile : SimDeviceSpec::SaveFd::kPipe;
    } else if (key == "content") {
      if (value != "checked" && value != "image") return bad("expected checked or image");
      spec.content =
          value == "image" ? SimDeviceSpec::Content::kImage : SimDeviceSpec::Content::kChecked;
    } else if (key == "fail_arc") {
      std::vector<std::string> parts = absl::StrSplit(value, ':');
      if (parts.size() < 2 || parts.size() > 4) return bad("expected FROM:TO[:ERRNO[:error]]");
      auto from = ParseMigState(parts[0]);
      auto to = ParseMigState(parts[1]);
      if (!from.ok() || !to.ok()) return bad((from.ok() ? to : from).status().message());
      spec.fail_arc = true;
      spec.fail_from = *from;
      spec.fail_to = *to;
      if (parts.size() >= 3) {
        auto e = ParseErrno(parts[2]);
        if (!e.ok()) return bad(e.status().message());
        spec.fail_errno = *e;
      }
      if (parts.size() == 4) {
        if (parts[3] != "error") return bad("the fourth field can only be 'error'");
        spec.fail_to_error = true;
      }
    } else {
      return bad(
          "unknown key (size, chunk, seed, initial, dirty_rate, features, short_io, save_fd, "
          "content, fail_arc, corrupt_at, commit_delay_ms, stall, data_size)");
    }
  }
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  return spec;
}

}  // namespace migmover::sim
