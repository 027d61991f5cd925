import Boot
import Testing
