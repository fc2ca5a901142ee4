// The start-path choice: which instance an activation gets, from the facts.
#include "agent/start_path.h"

#include <gtest/gtest.h>

#include <vector>

namespace stoke::agent {
namespace {

using P = StartPath;

StartFacts facts(v1::StartKind forced = v1::START_KIND_UNSPECIFIED, v1::Runtime runtime = v1::PYTHON,
                 bool zygote = false, bool image = false) {
  return StartFacts{forced, runtime, zygote, image};
}

TEST(StartPath, AnIdleInstanceComesFirstThenAPrewarmedRuntimeThenAColdStart) {
  EXPECT_EQ(pooled_paths(facts()), (std::vector<P>{P::kWarm, P::kPrewarmed}));
  EXPECT_EQ(new_instance_path(facts()), P::kCold);
  EXPECT_EQ(pooled_paths(facts(v1::WARM)), (std::vector<P>{P::kWarm, P::kPrewarmed})) << "WARM is checked at invoke";
}

TEST(StartPath, AReadyZygoteOrImageBeatsAPrewarmedRuntime) {
  EXPECT_EQ(pooled_paths(facts({}, v1::PYTHON, true, false)), std::vector<P>{P::kWarm});
  EXPECT_EQ(new_instance_path(facts({}, v1::PYTHON, true, false)), P::kZygoteFork);
  EXPECT_EQ(pooled_paths(facts({}, v1::PYTHON, false, true)), std::vector<P>{P::kWarm});
  EXPECT_EQ(new_instance_path(facts({}, v1::PYTHON, false, true)), P::kRestore);
  EXPECT_EQ(new_instance_path(facts({}, v1::PYTHON, true, true)), P::kZygoteFork) << "a fork is faster than a restore";
}

TEST(StartPath, ForcedKindsAreHonoured) {
  for (bool zygote : {false, true})
    for (bool image : {false, true}) {
      EXPECT_TRUE(pooled_paths(facts(v1::COLD, v1::PYTHON, zygote, image)).empty());
      EXPECT_EQ(new_instance_path(facts(v1::COLD, v1::PYTHON, zygote, image)), P::kCold);
      EXPECT_TRUE(pooled_paths(facts(v1::ZYGOTE, v1::PYTHON, zygote, image)).empty());
      EXPECT_EQ(new_instance_path(facts(v1::ZYGOTE, v1::PYTHON, zygote, image)), P::kWaitForZygote);
      EXPECT_TRUE(pooled_paths(facts(v1::RESTORE, v1::PYTHON, zygote, image)).empty());
      EXPECT_EQ(new_instance_path(facts(v1::RESTORE, v1::PYTHON, zygote, image)), P::kWaitForImage);
      EXPECT_EQ(pooled_paths(facts(v1::PREWARM, v1::PYTHON, zygote, image)), std::vector<P>{P::kPrewarmed})
          << "never an idle instance: the caller asked for a stem cell";
      EXPECT_EQ(new_instance_path(facts(v1::PREWARM, v1::PYTHON, zygote, image)), P::kCold) << "none was free";
    }
}

TEST(StartPath, ExecFunctionsAreWarmOrCold) {
  EXPECT_EQ(pooled_paths(facts({}, v1::EXEC)), std::vector<P>{P::kWarm});
  EXPECT_EQ(new_instance_path(facts({}, v1::EXEC)), P::kCold);
  EXPECT_EQ(new_instance_path(facts({}, v1::EXEC, true, true)), P::kCold) << "facts that cannot be are not trusted";
}

TEST(StartPath, NodeFunctionsUsePrewarmedRuntimesButNeverZygotesOrImages) {
  EXPECT_EQ(pooled_paths(facts({}, v1::NODE)), (std::vector<P>{P::kWarm, P::kPrewarmed}));
  EXPECT_EQ(new_instance_path(facts({}, v1::NODE, true, true)), P::kCold);
}

}  // namespace
}  // namespace stoke::agent
