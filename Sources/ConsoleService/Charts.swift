import Foundation

/// Bar charts drawn on the server as SVG: no script, no styles (the page's policy allows
/// neither inline), every label escaped.
enum BarChart {
    struct Bar {
        let label: String
        let value: Double
    }

    static func svg(_ bars: [Bar], title: String, width: Int = 640, barHeight: Int = 22) -> String {
        guard !bars.isEmpty else { return "" }
        let labelWidth = 200
        let maxValue = max(bars.map(\.value).max() ?? 1, 1)
        let height = bars.count * (barHeight + 6) + 10
        var svg = ##"<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="\##(escape(title))" width="\##(width)" height="\##(height)" viewBox="0 0 \##(width) \##(height)">"##
        svg += "<title>\(escape(title))</title>"
        for (index, bar) in bars.enumerated() {
            let y = 5 + index * (barHeight + 6)
            let length = Int(Double(width - labelWidth - 80) * bar.value / maxValue)
            svg += ##"<text x="0" y="\##(y + barHeight - 6)" font-size="13" fill="#1d2430">\##(escape(String(bar.label.prefix(28))))</text>"##
            svg += ##"<rect x="\##(labelWidth)" y="\##(y)" width="\##(max(length, 1))" height="\##(barHeight)" fill="#1f5fbf"></rect>"##
            svg += ##"<text x="\##(labelWidth + max(length, 1) + 6)" y="\##(y + barHeight - 6)" font-size="13" fill="#1d2430">\##(format(bar.value))</text>"##
        }
        return svg + "</svg>"
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int64(value)) : String(format: "%.2f", value)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
