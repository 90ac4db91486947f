#include "daemon/base/memory_budget.h"

#include "gtest/gtest.h"

namespace migmover {
namespace {

TEST(MemoryBudgetTest, RefusesWhatWouldPassTheLimitAndChangesNothing) {
  auto budget = MemoryBudget::Create(1000);
  auto a = budget->Reserve(600, "session a");
  ASSERT_TRUE(a.ok());
  auto b = budget->Reserve(500, "session b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("session b needs 500 bytes"), std::string::npos)
      << b.status();
  EXPECT_EQ(budget->in_use(), 600u);
  auto c = budget->Reserve(400, "session c");
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(budget->in_use(), 1000u);
}

TEST(MemoryBudgetTest, AReservationGivesItsBytesBackOnce) {
  auto budget = MemoryBudget::Create(1000);
  {
    auto a = budget->Reserve(700, "a");
    ASSERT_TRUE(a.ok());
    MemoryBudget::Reservation moved = std::move(*a);
    EXPECT_EQ(budget->in_use(), 700u);
    MemoryBudget::Reservation other;
    other = std::move(moved);
    EXPECT_EQ(budget->in_use(), 700u);
  }
  EXPECT_EQ(budget->in_use(), 0u);
  EXPECT_TRUE(budget->Reserve(1000, "all").ok());  // Released at once: a temporary.
  EXPECT_EQ(budget->in_use(), 0u);
}

TEST(MemoryBudgetTest, MoreThanTheWholeLimitSaysItCanNeverFit) {
  auto budget = MemoryBudget::Create(1000);
  auto big = budget->Reserve(1001, "device d");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("can never fit"), std::string::npos) << big.status();
}

TEST(MemoryBudgetTest, NoLimitCountsAnyway) {
  auto budget = MemoryBudget::Create(0);
  auto a = budget->Reserve(uint64_t{1} << 50, "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(budget->in_use(), uint64_t{1} << 50);
}

TEST(MemoryBudgetTest, DefaultLimitIsAQuarterOfTheMachineAtLeast256MiB) {
  EXPECT_GE(MemoryBudget::DefaultLimit(), 256ull << 20);
}

}  // namespace
}  // namespace migmover
