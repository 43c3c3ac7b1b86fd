fn main() {
    std::process::exit(molt::cli::main())
}
