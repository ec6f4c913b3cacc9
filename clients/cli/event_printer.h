// Renders a job's event stream for a person: a progress bar with ETA on a terminal, plain lines otherwise.
#pragma once

#include <cstdio>
#include <string>

#include "atelier/v1/generation.pb.h"

namespace atelier::cli {

class EventPrinter {
 public:
  // `out` receives the rendering; `tty` selects the redrawn bar (else one line per event, progress throttled).
  EventPrinter(std::FILE* out, bool tty) : out_(out), tty_(tty) {}
  void Print(const v1::GenerateEvent& event);
  // Ends a pending progress bar line.
  void Flush();

 private:
  void Line(const std::string& text);

  std::FILE* out_;
  bool tty_;
  bool bar_open_ = false;
  int last_percent_ = -1;
};

// "1m05s", "12.3s".
std::string FormatSeconds(double seconds);

}  // namespace atelier::cli
