import Testing
@testable import OCI
