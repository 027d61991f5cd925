// os-release as composefs-rs 0.9 reads it for boot labels (its own test table, and the edges
// of its line splitting).

import Boot
import Testing

struct OSReleaseTests {
    /// composefs-rs's dequoting cases: |quoted| |result|, or |quoted| alone for a failure.
    static let dequoteCases = #"""
        ||                  ||
        |""|                ||
        |''|                ||
        |""''""|            ||
        |hello|             |hello|
        |1234|              |1234|
        |\\\\|              |\\\\|
        |\$\`\\|            |\$\`\\|
        |"closed"|          |closed|
        |"closed\\"|        |closed\|
        |"a"|               |a|
        |" "|               | |
        |"\""|              |"|
        |"\\"|              |\|
        |"\$5"|             |$5|
        |"$5"|              |$5|
        |"\`tick\`"|        |`tick`|
        |"`tick`"|          |`tick`|
        |"\'"|              |'|
        |"not closed|
        |"not closed\"|
        |"|
        |"\\|
        |"\"|
        |'a'|               |a|
        |' '|               | |
        |'\'|               |\|
        |'\$'|              |\$|
        |'closed\'|         |closed\|
        |'|
        |'not closed|
        |'\''|
        """#

    @Test func valuesAreDequotedAsComposefsRSDoes() {
        for line in Self.dequoteCases.split(separator: "\n") {
            let parts = line.split(separator: "|", omittingEmptySubsequences: false)
            let quoted = String(parts[1])
            let release = OSRelease("ID=\(quoted)\n")
            if parts.count == 5 {
                #expect(release.value(["ID"]) == String(parts[3]), "\(quoted)")
            } else {
                #expect(release.value(["ID"]) == nil, "\(quoted)")
            }
        }
    }

    @Test func labelsFallBackAsTheSpecificationSays() {
        let cases: [(String, String?)] = [
            ("PRETTY_NAME='prettyOS'\nVERSION_ID=\"Rocky Racoon\"\nVERSION=42\nID=pretty-os\n", "prettyOS Rocky Racoon"),
            // An unclosed quote makes the value unusable: the next key is tried.
            ("PRETTY_NAME='prettyOS\nVERSION_ID=\"Rocky Racoon\"\nVERSION=42\nID=pretty-os\n", "pretty-os Rocky Racoon"),
            ("PRETTY_NAME='prettyOS\nVERSION=42\nID=pretty-os\n", "pretty-os 42"),
            ("PRETTY_NAME='prettyOS'\nID=pretty-os\n", "prettyOS"),
            ("ID=pretty-os\n", "pretty-os"),
            ("NAME=Named\nID=x\n", "Named"),
            ("VERSION_ID=1\n", nil),
            ("", nil),
            // CRLF lines, comments (after white space too), the last of a key winning, keys as written.
            ("# PRETTY_NAME=comment\r\n  #ID=no\r\nID=first\r\nID=second\r\n VERSION_ID=spaced\r\nVERSION=9\r\n", "second 9"),
            // White space around the value goes; inside quotes it stays.
            ("PRETTY_NAME=  \" A  B \"  \nVERSION_ID=\t1\t", " A  B  1"),
            // Only "\n" ends a line: a lone "\r" is part of it.
            ("ID=a\rb\nVERSION=c\r", "a\rb c"),
            ("ID=x=y\n", "x=y"),
        ]
        for (text, label) in cases {
            #expect(OSRelease(text).bootLabel == label, "\(text.debugDescription)")
        }
    }
}
