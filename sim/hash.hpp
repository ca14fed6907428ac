#pragma once
// A 64-bit FNV-1a hash over 8-byte words (the tail padded and tagged with its length): fast
// enough for datasets and parameter vectors, for telling data apart and catching corruption
// (not for security).
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace hepsim {

inline constexpr std::uint64_t kHashSeed = 0xcbf29ce484222325ULL;

inline std::uint64_t hash_mix(std::uint64_t h, std::uint64_t word) {
  h ^= word;
  return h * 0x100000001b3ULL;
}

inline std::uint64_t hash_bytes(const void* data, std::size_t n, std::uint64_t h = kHashSeed) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = hash_mix(h, w);
  }
  std::uint64_t tail = 0;
  if (n > i) std::memcpy(&tail, p + i, n - i);
  return hash_mix(h, tail ^ (static_cast<std::uint64_t>(n - i) << 56));
}

}  // namespace hepsim
