#include "actors/model/plan.hpp"

namespace vmitap {

const char* to_string(step_mode m) {
  switch (m) {
    case step_mode::classic:
      return "classic";
    case step_mode::fast:
      return "fast";
    case step_mode::emulate:
      return "emulate";
  }
  return "unknown";
}

}  // namespace vmitap
