#include "client/svg_plot.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace sparse {
namespace {

constexpr double kWidth = 760, kHeight = 480;
constexpr double kLeft = 80, kRight = 190, kTop = 64, kBottom = 56;  // margins

std::string Escape(const std::string& s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

// 1, 2, 5 x 10^k steps giving about `target` ticks over [0, max].
double NiceStep(double max, int target) {
  const double raw = max / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

std::string Label(double v) {
  if (v >= 1e6) return absl::StrFormat("%gM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%gk", v / 1e3);
  return absl::StrFormat("%g", v);
}

}  // namespace

std::string LatencyThroughputSvg(const std::string& title, const std::string& subtitle,
                                 const std::vector<PlotSeries>& series) {
  double max_x = 0, min_y = 1e300, max_y = 0;
  for (const PlotSeries& s : series) {
    for (const auto& [x, y] : s.points) {
      max_x = std::max(max_x, x);
      if (y > 0) {
        min_y = std::min(min_y, y);
        max_y = std::max(max_y, y);
      }
    }
  }
  if (max_x <= 0) max_x = 1;
  if (max_y <= 0) min_y = 1, max_y = 10;
  const double x_step = NiceStep(max_x * 1.05, 6);
  const double x_max = std::ceil(max_x * 1.05 / x_step) * x_step;
  const double y_lo = std::pow(10.0, std::floor(std::log10(min_y)));
  const double y_hi = std::pow(10.0, std::ceil(std::log10(max_y * 1.0001)));
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + x / x_max * plot_w; };
  auto py = [&](double y) {
    const double f = (std::log10(std::max(y, y_lo)) - std::log10(y_lo)) /
                     (std::log10(y_hi) - std::log10(y_lo));
    return kTop + plot_h * (1 - f);
  };

  std::vector<std::string> out;
  out.push_back(absl::StrFormat(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">)",
      kWidth, kHeight, kWidth, kHeight));
  out.push_back(absl::StrFormat(R"(<rect width="%g" height="%g" fill="white"/>)", kWidth, kHeight));
  out.push_back(absl::StrFormat(R"(<text x="%g" y="24" font-size="16" font-weight="bold">%s</text>)",
                                kLeft, Escape(title)));
  out.push_back(absl::StrFormat(R"(<text x="%g" y="44" fill="#555">%s</text>)", kLeft,
                                Escape(subtitle)));
  // Grid, ticks and axis labels.
  for (double x = 0; x <= x_max * 1.0001; x += x_step) {
    out.push_back(absl::StrFormat(
        R"(<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#ddd"/><text x="%.1f" y="%g" text-anchor="middle">%s</text>)",
        px(x), kTop, px(x), kTop + plot_h, px(x), kTop + plot_h + 16, Label(x)));
  }
  for (double y = y_lo; y <= y_hi * 1.0001; y *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = y * m;
      if (v > y_hi * 1.0001) break;
      out.push_back(absl::StrFormat(R"(<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="%s"/>)",
                                    kLeft, py(v), kLeft + plot_w, py(v), m == 1 ? "#ccc" : "#eee"));
      out.push_back(absl::StrFormat(R"(<text x="%g" y="%.1f" text-anchor="end">%s</text>)",
                                    kLeft - 6, py(v) + 4, Label(v)));
    }
  }
  out.push_back(absl::StrFormat(R"(<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#333"/>)",
                                kLeft, kTop, plot_w, plot_h));
  out.push_back(absl::StrFormat(R"(<text x="%g" y="%g" text-anchor="middle">throughput (requests/s)</text>)",
                                kLeft + plot_w / 2, kHeight - 14));
  out.push_back(absl::StrFormat(
      R"svg(<text transform="translate(18 %g) rotate(-90)" text-anchor="middle">latency (µs, log scale)</text>)svg",
      kTop + plot_h / 2));
  // Series and legend.
  for (size_t i = 0; i < series.size(); ++i) {
    const PlotSeries& s = series[i];
    std::vector<std::string> pts;
    for (const auto& [x, y] : s.points) pts.push_back(absl::StrFormat("%.1f,%.1f", px(x), py(y)));
    const std::string dash = s.dashed ? R"( stroke-dasharray="6 4")" : "";
    out.push_back(absl::StrFormat(R"(<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>)",
                                  absl::StrJoin(pts, " "), s.color, dash));
    for (const auto& [x, y] : s.points) {
      out.push_back(absl::StrFormat(R"(<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>)", px(x), py(y),
                                    s.color));
    }
    const double ly = kTop + 12 + 20 * i, lx = kLeft + plot_w + 16;
    out.push_back(absl::StrFormat(
        R"(<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2"%s/><text x="%g" y="%g">%s</text>)",
        lx, ly, lx + 28, ly, s.color, dash, lx + 34, ly + 4, Escape(s.name)));
  }
  out.push_back("</svg>");
  return absl::StrJoin(out, "\n") + "\n";
}

}  // namespace sparse
