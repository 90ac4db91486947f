// The fuzz targets' driver when they are not built with libFuzzer: runs LLVMFuzzerTestOneInput
// on every file in the directories (or files) given as arguments, then on deterministic
// mutations of each (bit flips, byte changes, truncations, splices of two seeds), so the
// sanitizer builds of deploy/test.sh exercise the decoders beyond the seeds. A crash or a
// sanitizer report fails the test; the input is printed first, in hex, to reproduce it.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

std::vector<std::string> Files(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "replay: no such corpus: %s\n", path.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) return {path};
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.push_back(path + "/" + e->d_name);
  }
  ::closedir(d);
  return out;
}

std::string Read(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The input about to run, printed if it crashes (a sanitizer abort ends the process).
const std::string* g_current = nullptr;

void Run(const std::string& input) {
  g_current = &input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  g_current = nullptr;
}

void PrintCurrent() {
  if (g_current == nullptr) return;
  std::fprintf(stderr, "replay: crashing input (%zu bytes):", g_current->size());
  for (unsigned char c : *g_current) std::fprintf(stderr, " %02x", c);
  std::fprintf(stderr, "\n");
}

uint64_t Next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  std::atexit(PrintCurrent);
  std::vector<std::string> seeds;
  for (int i = 1; i < argc; ++i) {
    for (const std::string& f : Files(argv[i])) seeds.push_back(Read(f));
  }
  if (seeds.empty()) {
    std::fprintf(stderr, "replay: no seeds\n");
    return 2;
  }
  for (const std::string& s : seeds) Run(s);
  Run("");
  const int per_seed = std::getenv("MIGMOVER_FUZZ_MUTATIONS") != nullptr
                           ? std::atoi(std::getenv("MIGMOVER_FUZZ_MUTATIONS"))
                           : 300;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  size_t runs = seeds.size() + 1;
  for (size_t i = 0; i < seeds.size(); ++i) {
    for (int m = 0; m < per_seed; ++m) {
      std::string in = seeds[i];
      const int edits = 1 + static_cast<int>(Next(rng) % 4);
      for (int e = 0; e < edits; ++e) {
        const uint64_t r = Next(rng);
        switch (r % 5) {
          case 0:  // Flip a bit.
            if (!in.empty()) in[(r >> 8) % in.size()] ^= static_cast<char>(1 << ((r >> 3) % 8));
            break;
          case 1:  // An interesting byte.
            if (!in.empty()) {
              static constexpr unsigned char kBytes[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0x10};
              in[(r >> 8) % in.size()] = static_cast<char>(kBytes[(r >> 4) % sizeof(kBytes)]);
            }
            break;
          case 2:  // Truncate.
            if (!in.empty()) in.resize((r >> 8) % in.size());
            break;
          case 3: {  // Splice another seed's tail.
            const std::string& other = seeds[(r >> 8) % seeds.size()];
            if (!other.empty()) in += other.substr((r >> 20) % other.size());
            break;
          }
          case 4:  // Random bytes appended.
            for (int k = 0; k < static_cast<int>((r >> 8) % 16); ++k) {
              in.push_back(static_cast<char>(Next(rng)));
            }
            break;
        }
      }
      Run(in);
      ++runs;
    }
  }
  std::fprintf(stderr, "replay: %zu seeds, %zu inputs run, no crash\n", seeds.size(), runs);
  return 0;
}
