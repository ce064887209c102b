#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "sim/sim.h"

namespace uw::sim {

namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks over `span`.
double TickStep(double span, int n) {
  if (span <= 0) return 1;
  double raw = span / n;
  double p = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

std::string Num(double v) {
  char buf[32];
  if (std::fabs(v) >= 1000 || v == std::floor(v)) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  }
  return buf;
}

}  // namespace

std::string LineChartSvg(const std::string& title, const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& series) {
  const double W = 900, H = 360, L = 70, R = 20, T = 40, B = 50;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  bool first = true;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      if (first) {
        x0 = x1 = x;
        y1 = y;
        first = false;
      }
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y1 = std::max(y1, y);
    }
  }
  y0 = 0;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  double ystep = TickStep(y1 - y0, 5);
  y1 = std::ceil(y1 / ystep) * ystep;
  double xstep = TickStep(x1 - x0, 8);
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };

  std::ostringstream o;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n",
                W, H, W, H);
  o << buf << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << Escape(title) << "</text>\n";
  // Grid and ticks.
  for (double y = y0; y <= y1 + ystep / 2; y += ystep) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  L, py(y), W - R, py(y), L - 6, py(y) + 4, Num(y).c_str());
    o << buf;
  }
  for (double x = std::ceil(x0 / xstep) * xstep; x <= x1 + 1e-9; x += xstep) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  px(x), T * 1.0, px(x), H - B, px(x), H - B + 16, Num(x).c_str());
    o << buf;
  }
  std::snprintf(buf, sizeof buf,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T,
                W - L - R, H - T - B);
  o << buf;
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">" << Escape(x_label)
    << "</text>\n";
  std::snprintf(buf, sizeof buf, "<text transform=\"translate(16,%.1f) rotate(-90)\" text-anchor=\"middle\">",
                (T + H - B) / 2);
  o << buf << Escape(y_label) << "</text>\n";
  // Series and legend.
  double lx = L + 10;
  for (const auto& s : series) {
    o << "<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"" << Escape(s.color) << "\" points=\"";
    for (const auto& [x, y] : s.points) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(x), py(y));
      o << buf;
    }
    o << "\"/>\n";
    std::snprintf(buf, sizeof buf, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"4\" fill=\"%s\"/>", lx, T + 10,
                  Escape(s.color).c_str());
    o << buf << "<text x=\"" << lx + 16 << "\" y=\"" << T + 16 << "\">" << Escape(s.name) << "</text>\n";
    lx += 20 + 7.0 * static_cast<double>(s.name.size()) + 20;
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace uw::sim
