// docker's -u against an image's /etc/passwd and /etc/group (guest/image/user.cpp): both files come
// from the (hostile) image and are parsed on the host. What it finds goes into the launch spec the
// host sends ember-init (vmm/run/spec.cpp: HOME, uid, gid, groups), which must still be one that
// can be sent.
//
// Input: USER[:GROUP], passwd text and group text, separated by NUL bytes.
#include <string>
#include <vector>

#include "guest/image/prepare.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "vmm/error.hpp"
#include "vmm/run/spec.hpp"

using namespace ember;
using namespace ember::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = as_text({data, size});
  std::vector<std::string> fields;
  for (int i = 0; i < 2; ++i) {
    const size_t end = text.find('\0');
    fields.emplace_back(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  }
  fields.emplace_back(text);
  try {
    const image::ResolvedUser user =
        image::resolve_user(fields[0], fields[1], fields[2], "image fuzz");
    FUZZ_CHECK(!user.groups.empty() && user.groups.front() == user.gid);
    run::LaunchSpec spec;
    spec.args = {"sh"};
    spec.env = run::with_defaults({}, "ember-fuzz", user.home);
    spec.uid = user.uid;
    spec.gid = user.gid;
    spec.groups = user.groups;
    spec.hostname = "ember-fuzz";
    run::spec_json(spec).dump();
  } catch (const Error&) {
    // An unknown user or group: one line naming it.
  }
  return 0;
}
