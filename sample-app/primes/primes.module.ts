import { Module } from '@nestjs/common';
import { PrimesController } from './primes.controller.js';
import { PrimesService } from './primes.service.js';

@Module({
  controllers: [PrimesController],
  providers: [PrimesService],
})
export class PrimesModule {}
