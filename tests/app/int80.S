# An i386 program for tests/seccomp_arch.rs: its system calls go through int $0x80, so seccomp
# sees them with AUDIT_ARCH_I386 and i386's numbers. getpid and write must pass the filter; the
# exit status is the errno getppid got (0 when it was allowed).
# Built by the test: as --32 int80.S -o int80.o && ld -m elf_i386 -static int80.o -o int80
        .text
        .globl  _start
_start:
        movl    $20, %eax               # getpid
        int     $0x80
        testl   %eax, %eax
        jle     fail
        movl    $4, %eax                # write(1, msg, len)
        movl    $1, %ebx
        movl    $msg, %ecx
        movl    $len, %edx
        int     $0x80
        cmpl    $len, %eax
        jne     fail
        movl    $64, %eax               # getppid
        int     $0x80
        negl    %eax
        movl    %eax, %ebx
        movl    $1, %eax                # exit(errno of getppid)
        int     $0x80
fail:
        movl    $99, %ebx
        movl    $1, %eax                # exit(99)
        int     $0x80

        .data
msg:    .ascii  "i386 getpid and write passed\n"
        len = . - msg
