module github.com/ezthrottle/ezthrottle/bench/sdk-overhead/go

go 1.19

require github.com/ezthrottle/ezthrottle/sdks/go v0.0.0

replace github.com/ezthrottle/ezthrottle/sdks/go => ../../../sdks/go
