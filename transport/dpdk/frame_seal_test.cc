#include "transport/dpdk/frame_seal.h"

#include <array>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace migmover::dpdk {
namespace {

peer::LinkKey Key(uint8_t fill) {
  peer::LinkKey k;
  k.bytes.fill(fill);
  return k;
}

struct Sealed {
  std::array<uint8_t, 40> header{};
  std::vector<uint8_t> payload;
  std::array<uint8_t, kFrameTagSize> tag{};
};

Sealed SealOne(FrameSeal& s, uint8_t type, uint64_t number, const std::vector<uint8_t>& plain) {
  Sealed out;
  for (size_t i = 0; i < out.header.size(); ++i) out.header[i] = static_cast<uint8_t>(i);
  out.payload = plain;
  EXPECT_TRUE(s.Seal(type, number, out.header.data(), out.header.size(), out.payload.data(),
                     out.payload.size(), out.tag.data()));
  return out;
}

class FrameSealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = FrameSeal::Create(Key(1), Key(2));
    auto b = FrameSeal::Create(Key(2), Key(1));
    ASSERT_TRUE(a.ok() && b.ok());
    a_ = std::move(*a);
    b_ = std::move(*b);
    plain_.resize(9000);
    for (size_t i = 0; i < plain_.size(); ++i) plain_[i] = static_cast<uint8_t>(i * 7);
  }
  std::unique_ptr<FrameSeal> a_, b_;
  std::vector<uint8_t> plain_;
};

TEST_F(FrameSealTest, OpensWhatThePeerSealedAndHidesIt) {
  Sealed f = SealOne(*a_, 1, 5, plain_);
  EXPECT_NE(f.payload, plain_) << "the payload must be encrypted";
  ASSERT_TRUE(b_->Open(1, 5, f.header.data(), f.header.size(), f.payload.data(),
                       f.payload.size(), f.tag.data()));
  EXPECT_EQ(f.payload, plain_);
}

TEST_F(FrameSealTest, EmptyPayloadIsAuthenticated) {
  Sealed f = SealOne(*a_, 2, 0, {});
  EXPECT_TRUE(b_->Open(2, 0, f.header.data(), f.header.size(), nullptr, 0, f.tag.data()));
  f.header[20] ^= 1;  // An ACK's field changed on the way.
  EXPECT_FALSE(b_->Open(2, 0, f.header.data(), f.header.size(), nullptr, 0, f.tag.data()));
}

TEST_F(FrameSealTest, RefusesAChangedPayloadHeaderNumberOrType) {
  {
    Sealed f = SealOne(*a_, 1, 5, plain_);
    f.payload[4000] ^= 0x10;
    EXPECT_FALSE(b_->Open(1, 5, f.header.data(), f.header.size(), f.payload.data(),
                          f.payload.size(), f.tag.data()));
  }
  {
    Sealed f = SealOne(*a_, 1, 5, plain_);
    f.header[16] ^= 1;  // The sequence number.
    EXPECT_FALSE(b_->Open(1, 5, f.header.data(), f.header.size(), f.payload.data(),
                          f.payload.size(), f.tag.data()));
  }
  {
    Sealed f = SealOne(*a_, 1, 5, plain_);
    EXPECT_FALSE(b_->Open(1, 6, f.header.data(), f.header.size(), f.payload.data(),
                          f.payload.size(), f.tag.data()))
        << "a frame moved to another number";
  }
  {
    Sealed f = SealOne(*a_, 1, 5, plain_);
    EXPECT_FALSE(b_->Open(2, 5, f.header.data(), f.header.size(), f.payload.data(),
                          f.payload.size(), f.tag.data()))
        << "a DATA frame passed off as an ACK";
  }
}

TEST_F(FrameSealTest, RefusesItsOwnDirectionAndOtherKeys) {
  Sealed f = SealOne(*a_, 1, 5, plain_);
  // A frame sent back to its sender (a reflection) does not open: each direction has its key.
  std::vector<uint8_t> copy = f.payload;
  EXPECT_FALSE(a_->Open(1, 5, f.header.data(), f.header.size(), copy.data(), copy.size(),
                        f.tag.data()));
  auto other = FrameSeal::Create(Key(3), Key(4));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE((*other)->Open(1, 5, f.header.data(), f.header.size(), f.payload.data(),
                              f.payload.size(), f.tag.data()));
}

TEST_F(FrameSealTest, SameNumberSameFrameSealsAlike) {
  // A retransmission is the same buffer; sealing the same frame again must give the same bytes
  // (no hidden state advances between frames).
  Sealed f1 = SealOne(*a_, 1, 9, plain_);
  Sealed f2 = SealOne(*a_, 1, 9, plain_);
  EXPECT_EQ(f1.payload, f2.payload);
  EXPECT_EQ(f1.tag, f2.tag);
  Sealed f3 = SealOne(*a_, 1, 10, plain_);
  EXPECT_NE(f1.payload, f3.payload) << "another number, another keystream";
}

}  // namespace
}  // namespace migmover::dpdk
